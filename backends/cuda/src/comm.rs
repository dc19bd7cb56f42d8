//! A rank's communicator for one planned group: [`NcclGroup`] on the one-GPU-per-rank path,
//! [`LocalGroup`](crate::local::LocalGroup) on the single-GPU path, local copies for a group
//! of one.
//!
//! On the NCCL path every collective is enqueued on the rank's stream and, outside a capture,
//! waited for within the group's timeout by polling the stream (and NCCL's asynchronous
//! error); a wait that runs out aborts the communicator and is [`CommError::Timeout`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use finetp_core::backend::{Backend, BackendError, Collective, CommError, DType, GroupSpec, Rendezvous, Tensor, checks};

use crate::CudaBackend;
use crate::placement::Placement;
use crate::kernels::{Arg, elementwise_grid};
use crate::local::LocalHub;
use crate::nccl::DataType;
use crate::nccl_comm::{Elem, NcclComm, nccl};

pub(crate) fn connect(be: &CudaBackend, spec: &GroupSpec, rv: &dyn Rendezvous) -> Result<Arc<dyn Collective<CudaBackend>>, CommError> {
    if spec.size() == 1 {
        return Ok(Arc::new(NcclGroup { spec: spec.clone(), be: be.clone(), comm: None }));
    }
    if let Placement::SingleGpu { .. } = be.placement {
        let n = spec.size();
        let shared = rv.local_shared(spec, "cuda.single_gpu", &move || Arc::new(LocalHub::new(n)))?;
        let hub = shared.and_then(|s| s.downcast::<LocalHub>().ok()).ok_or_else(|| CommError::InvalidArgument {
            group: spec.name(),
            op: "connect",
            detail: "the single-GPU path needs every member of the group in this process".into(),
        })?;
        return Ok(Arc::new(crate::local::connect(be, spec, hub)?));
    }
    let lib = nccl()?;
    be.bind()?;
    Ok(Arc::new(NcclGroup { spec: spec.clone(), be: be.clone(), comm: Some(NcclComm::connect(lib, spec, rv)?) }))
}

/// This rank's NCCL communicator for one group (`None`: a group of one).
pub struct NcclGroup {
    spec: GroupSpec,
    be: CudaBackend,
    comm: Option<NcclComm>,
}

fn bytes_of(t: &Tensor<CudaBackend>) -> usize {
    t.buffer().len()
}

impl NcclGroup {
    fn bad(&self, op: &'static str, detail: String) -> CommError {
        CommError::InvalidArgument { group: self.spec.name(), op, detail }
    }

    fn stream(&self) -> *mut std::ffi::c_void {
        self.be.stream().cast()
    }

    /// Waits (outside a capture) for what was just enqueued, within the group's timeout.
    fn wait(&self, op: &'static str) -> Result<(), CommError> {
        self.be.enqueued();
        let Some(comm) = &self.comm else { return Ok(()) };
        if self.be.capturing() {
            return Ok(());
        }
        let start = Instant::now();
        loop {
            // SAFETY: this rank's own stream.
            let r = unsafe { cudarc::driver::sys::cuStreamQuery(self.be.stream()) };
            match r {
                cudarc::driver::sys::CUresult::CUDA_SUCCESS => return Ok(()),
                cudarc::driver::sys::CUresult::CUDA_ERROR_NOT_READY => {}
                e => return Err(BackendError::device(format!("CUDA stream after {op}"), format!("{e:?}")).into()),
            }
            if let Some(detail) = comm.async_error() {
                comm.abort();
                return Err(CommError::Transport { group: self.spec.name(), op, detail });
            }
            if start.elapsed() >= self.spec.timeout {
                comm.abort();
                let missing: Vec<usize> = (0..self.spec.size()).filter(|&m| m != self.spec.rank).collect();
                let ranks = missing.iter().map(|&m| self.spec.global_rank_of(m)).collect();
                return Err(CommError::Timeout { group: self.spec.name(), op, after: self.spec.timeout, missing, ranks });
            }
            std::thread::sleep(Duration::from_micros(if start.elapsed() < Duration::from_millis(2) { 5 } else { 200 }));
        }
    }
}

fn sum_type(t: &Tensor<CudaBackend>) -> Result<DataType, BackendError> {
    match t.dtype() {
        DType::F32 => Ok(DataType::Float32),
        DType::U32 => Ok(DataType::Uint32),
        got => Err(BackendError::DType { op: "all_reduce_sum", expected: "f32 or u32", got }),
    }
}

impl Collective<CudaBackend> for NcclGroup {
    fn info(&self) -> &GroupSpec {
        &self.spec
    }

    fn all_reduce_sum(&self, t: &mut Tensor<CudaBackend>) -> Result<(), CommError> {
        let dt = sum_type(t)?;
        let Some(comm) = &self.comm else { return Ok(()) };
        self.be.bind()?;
        // SAFETY: `t` is a live buffer of `numel` elements on this rank's GPU.
        unsafe { comm.all_reduce_sum(t.buffer().device_ptr() as *mut _, t.numel(), dt, self.stream())? };
        self.wait("all_reduce_sum")
    }

    fn all_gather(&self, mine: &Tensor<CudaBackend>, counts: &[usize], out: &mut Tensor<CudaBackend>) -> Result<(), CommError> {
        checks::collective::all_gather(mine, counts, out, self.spec.rank, self.spec.size()).map_err(|d| self.bad("all_gather", d))?;
        let row = mine.row_len() * mine.dtype().size_in_bytes();
        let Some(comm) = &self.comm else {
            return Ok(self.be.copy_d2d(out.buffer().device_ptr(), mine.buffer().device_ptr(), bytes_of(mine))?);
        };
        self.be.bind()?;
        let elems: Vec<usize> = counts.iter().map(|c| c * row).collect();
        // SAFETY: shapes checked above; byte counts of live buffers.
        unsafe { comm.all_gather_v(mine.buffer().device_ptr() as *const _, out.buffer().device_ptr() as *mut _, &elems, Elem::BYTE, self.stream())? };
        self.wait("all_gather")
    }

    fn reduce_scatter_sum(&self, all: &Tensor<CudaBackend>, counts: &[usize], out: &mut Tensor<CudaBackend>) -> Result<(), CommError> {
        checks::collective::reduce_scatter(all, counts, out, self.spec.rank, self.spec.size()).map_err(|d| self.bad("reduce_scatter_sum", d))?;
        let me = self.spec.rank;
        let Some(comm) = &self.comm else {
            return Ok(self.be.copy_d2d(out.buffer().device_ptr(), all.buffer().device_ptr(), bytes_of(out))?);
        };
        self.be.bind()?;
        let row = all.row_len();
        let elems: Vec<usize> = counts.iter().map(|c| c * row).collect();
        let staging = self.be.empty(&[self.spec.size() * counts[me], row], DType::F32)?;
        // SAFETY: shapes checked above; the staging buffer holds size × counts[me] rows.
        let summed = unsafe { comm.reduce_scatter_v(all.buffer().device_ptr() as *const _, out.buffer().device_ptr() as *mut _, staging.buffer().device_ptr() as *mut _, &elems, self.stream())? };
        if !summed && elems[me] > 0 {
            let args = [Arg::Ptr(out.buffer().device_ptr()), Arg::Ptr(staging.buffer().device_ptr()), Arg::U32(self.spec.size() as u32), Arg::U64(elems[me] as u64)];
            self.be.launch("finetp_sum_parts_f32", elementwise_grid(elems[me]), 256, &args)?;
        }
        self.wait("reduce_scatter_sum")
    }

    fn all_to_all(&self, send: &Tensor<CudaBackend>, send_counts: &[usize], recv_counts: &[usize], out: &mut Tensor<CudaBackend>) -> Result<(), CommError> {
        checks::collective::all_to_all(send, send_counts, recv_counts, out, self.spec.size()).map_err(|d| self.bad("all_to_all", d))?;
        let row = send.row_len() * send.dtype().size_in_bytes();
        let Some(comm) = &self.comm else {
            return Ok(self.be.copy_d2d(out.buffer().device_ptr(), send.buffer().device_ptr(), bytes_of(out))?);
        };
        self.be.bind()?;
        let (s, r): (Vec<usize>, Vec<usize>) = (send_counts.iter().map(|c| c * row).collect(), recv_counts.iter().map(|c| c * row).collect());
        // SAFETY: shapes checked above.
        unsafe { comm.all_to_all_v(send.buffer().device_ptr() as *const _, &s, out.buffer().device_ptr() as *mut _, &r, Elem::BYTE, self.stream())? };
        self.wait("all_to_all")
    }

    fn broadcast(&self, t: &mut Tensor<CudaBackend>, root: usize) -> Result<(), CommError> {
        checks::collective::broadcast(root, self.spec.size()).map_err(|d| self.bad("broadcast", d))?;
        let Some(comm) = &self.comm else { return Ok(()) };
        self.be.bind()?;
        // SAFETY: a live buffer of `bytes` bytes.
        unsafe { comm.broadcast(t.buffer().device_ptr() as *mut _, bytes_of(t), DataType::Uint8, root, self.stream())? };
        self.wait("broadcast")
    }

    fn barrier(&self) -> Result<(), CommError> {
        let Some(comm) = &self.comm else { return Ok(()) };
        let one = self.be.zeros(&[1], DType::U32)?;
        self.be.bind()?;
        // SAFETY: a live one-element buffer.
        unsafe { comm.all_reduce_sum(one.buffer().device_ptr() as *mut _, 1, DataType::Uint32, self.stream())? };
        self.wait("barrier")
    }
}
