//! The memory half of the backend contract on the CPU, and how a rank opens its device and
//! connects its groups.

use std::sync::Arc;

use finetp_core::backend::{Backend, BackendError, Block, CapturedGraph, Collective, CommError, DType, DeviceSlot, GroupSpec, HostData, HostTensor, Rendezvous, Tensor};

use crate::comm;
use crate::graph::recording;
use crate::storage::{CpuBackend, CpuStorage, CpuTensor};

impl Backend for CpuBackend {
    type Buffer = CpuStorage;
    const NAME: &'static str = "cpu";

    /// A rayon pool with this rank's share of the machine's cores. A `FINETP_CPU_ISA` that names
    /// no block-GEMM path, or one this CPU lacks, is refused here, before any weight loads.
    fn open(slot: &DeviceSlot) -> Result<Self, BackendError> {
        crate::gemm::quant::selected_isa()?;
        CpuBackend::new(CpuBackend::threads_per_rank(slot.local_ranks))
    }

    /// The in-process collectives: every member of the group must be a thread of this process.
    fn connect(&self, spec: &GroupSpec, rv: &dyn Rendezvous) -> Result<Arc<dyn Collective<Self>>, CommError> {
        comm::connect_host(spec, rv)
    }

    fn describe(&self) -> String {
        format!("cpu ({} threads)", self.threads())
    }

    /// f32: the reference computes in the widest type every model's HF implementation uses.
    fn activation_dtype(&self) -> DType {
        DType::F32
    }

    /// Q8_0, Q4_0 and Q4_1 stay as stored: `crate::gemm::quant` multiplies by their blocks and
    /// the embedding kernel decodes the rows it gathers.
    fn keeps_weight_dtype(&self, dtype: DType) -> bool {
        dtype.is_float() || crate::gemm::keeps_blocks(dtype)
    }

    /// While capturing, the new tensor is also zeroed again at every replay, so code that
    /// accumulates into a fresh buffer behaves as it does eagerly.
    fn zeros(&self, shape: &[usize], dtype: DType) -> Result<CpuTensor, BackendError> {
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| BackendError::Shape(format!("zeros: {shape:?} overflows")))?;
        let mut t = Tensor::from_parts(CpuStorage::zeros(dtype, n)?, shape.to_vec(), dtype);
        if recording::capturing() {
            self.fill_zero(&mut t)?;
        }
        Ok(t)
    }

    fn upload(&self, host: &HostTensor) -> Result<CpuTensor, BackendError> {
        if recording::capturing() {
            return Err(recording::host_sync("upload"));
        }
        Ok(Tensor::from_parts(CpuStorage::from_host(host.data.clone()), host.shape.clone(), host.dtype()))
    }

    fn download(&self, t: &CpuTensor) -> Result<HostTensor, BackendError> {
        if recording::capturing() {
            return Err(recording::host_sync("download"));
        }
        let data = match t.buffer() {
            CpuStorage::F32(v) => HostData::F32(v.clone()),
            CpuStorage::F16(v) => HostData::F16(v.clone()),
            CpuStorage::BF16(v) => HostData::BF16(v.clone()),
            CpuStorage::U32(v) => HostData::U32(v.clone()),
            CpuStorage::Blocks { dtype, bytes } => HostData::Quantized { dtype: *dtype, bytes: bytes.clone() },
        };
        HostTensor::new(data, t.shape())
    }

    fn synchronize(&self) -> Result<(), BackendError> {
        Ok(())
    }

    fn copy_block(&self, src: &CpuTensor, dst: &mut CpuTensor, block: Block) -> Result<(), BackendError> {
        self.launch("copy_block", &[src], &mut [dst], move |_, i, o| copy_block(i[0], o[0], &block))
    }

    fn write(&self, t: &mut CpuTensor, host: &HostTensor) -> Result<(), BackendError> {
        if recording::capturing() {
            return Err(recording::host_sync("write"));
        }
        finetp_core::backend::checks::write(t, host)?;
        match (&host.data, t.buffer_mut()) {
            (HostData::F32(s), CpuStorage::F32(d)) => d.copy_from_slice(s),
            (HostData::F16(s), CpuStorage::F16(d)) => d.copy_from_slice(s),
            (HostData::BF16(s), CpuStorage::BF16(d)) => d.copy_from_slice(s),
            (HostData::U32(s), CpuStorage::U32(d)) => d.copy_from_slice(s),
            (HostData::Quantized { bytes: s, .. }, CpuStorage::Blocks { bytes: d, .. }) if s.len() == d.len() => d.copy_from_slice(s),
            _ => return Err(BackendError::Shape("write: storage and tensor dtype disagree".into())),
        }
        Ok(())
    }

    fn begin_capture(&self) -> Result<(), BackendError> {
        recording::begin()
    }

    fn end_capture(&self) -> Result<Box<dyn CapturedGraph>, BackendError> {
        Ok(Box::new(recording::end()?))
    }
}

impl CpuBackend {
    /// Sets every element to zero (recorded while capturing, as `zeros` needs).
    pub(crate) fn fill_zero(&self, t: &mut CpuTensor) -> Result<(), BackendError> {
        self.launch("fill_zero", &[], &mut [t], |_, _, o| {
            o[0].buffer_mut().as_bytes_mut().fill(0);
            Ok(())
        })
    }
}

fn copy_block(src: &CpuTensor, dst: &mut CpuTensor, b: &Block) -> Result<(), BackendError> {
    finetp_core::backend::checks::copy_block(src, dst, b)?;
    if src.dtype().is_quantized() {
        return Err(BackendError::Unsupported(format!("copy_block of {} blocks (weights are never copied in parts)", src.dtype())));
    }
    let (sw, dw) = (src.row_len(), dst.row_len());
    let es = src.dtype().size_in_bytes();
    let s = src.buffer().as_bytes();
    let d = dst.buffer_mut().as_bytes_mut();
    for r in 0..b.rows {
        let so = ((b.src_row + r) * sw + b.src_col) * es;
        let doff = ((b.dst_row + r) * dw + b.dst_col) * es;
        d[doff..doff + b.cols * es].copy_from_slice(&s[so..so + b.cols * es]);
    }
    Ok(())
}
