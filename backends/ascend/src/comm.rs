//! One HCCL communicator per planned group.
//!
//! [`connect`]: member 0 makes the group's root info (`HcclGetRootInfo`), the `Rendezvous`
//! carries its bytes to every member, and each member joins with `HcclCommInitRootInfo` on its
//! own thread (the one whose context is current), in the plan's group order. A group of one
//! needs no HCCL: its collectives are local copies.
//!
//! Movement is along rows; HCCL counts elements, so every count below is rows × row length.
//! Uneven all-gather / reduce-scatter / all-to-all are HCCL's V collectives (u64 counts and
//! displacements). Every collective is followed by a wait on the stream bounded by the
//! group's timeout (`aclrtSynchronizeStreamWithTimeout`), outside a capture; a wait that runs
//! out is [`CommError::Timeout`], with HCCL's asynchronous error if it has one.

use std::sync::Arc;

use finetp_core::backend::{Backend, BackendError, Block, Collective, CommError, DType, GroupSpec, Rendezvous, Tensor, broadcast_bytes, checks};
use hccl_sys::sys::{HcclComm, HcclDataType, HcclReduceOp, HcclRootInfo};
use hccl_sys::{HcclError, HcclLib};

use crate::AscendBackend;
use crate::runtime::hccl;

/// This rank's communicator for one group.
pub struct HcclGroup {
    spec: GroupSpec,
    be: AscendBackend,
    /// `None` for a group of one.
    comm: Option<(HcclComm, &'static HcclLib)>,
}

// SAFETY: an HCCL communicator is a handle used with this rank's stream; finetp calls a
// group's collectives from the rank's own thread (the trait needs `Send + Sync` to be shared
// by the layers of that rank).
unsafe impl Send for HcclGroup {}
unsafe impl Sync for HcclGroup {}

impl Drop for HcclGroup {
    fn drop(&mut self) {
        if let Some((c, lib)) = self.comm.take() {
            // SAFETY: made by HcclCommInitRootInfo, destroyed once.
            unsafe { lib.api.HcclCommDestroy(c) };
        }
    }
}

fn hccl_err(spec: &GroupSpec, op: &'static str, e: HcclError) -> CommError {
    CommError::Transport { group: spec.name(), op, detail: e.to_string() }
}

pub(crate) fn connect(be: &AscendBackend, spec: &GroupSpec, rv: &dyn Rendezvous) -> Result<Arc<dyn Collective<AscendBackend>>, CommError> {
    if spec.size() == 1 {
        return Ok(Arc::new(HcclGroup { spec: spec.clone(), be: be.clone(), comm: None }));
    }
    let lib = hccl()?;
    let mut root = HcclRootInfo { internal: [0; hccl_sys::ROOT_INFO_BYTES] };
    if spec.rank == 0 {
        // SAFETY: writes the root info struct.
        lib.check("HcclGetRootInfo", unsafe { lib.api.HcclGetRootInfo(&mut root) }).map_err(|e| hccl_err(spec, "connect", e))?;
    }
    let mine: Vec<u8> = root.internal.iter().map(|&c| c as u8).collect();
    let bytes = broadcast_bytes(rv, spec, 0, &mine)?;
    if bytes.len() != hccl_sys::ROOT_INFO_BYTES {
        return Err(CommError::Mismatch { group: spec.name(), op: "connect", detail: format!("root info of {} bytes, HCCL's is {}", bytes.len(), hccl_sys::ROOT_INFO_BYTES) });
    }
    for (d, s) in root.internal.iter_mut().zip(&bytes) {
        *d = *s as _;
    }
    let mut comm: HcclComm = std::ptr::null_mut();
    let (n, me) = (spec.size() as u32, spec.rank as u32);
    // SAFETY: every member passes the same root info and its own rank; blocks until all join.
    lib.check("HcclCommInitRootInfo", unsafe { lib.api.HcclCommInitRootInfo(n, &root, me, &mut comm) }).map_err(|e| hccl_err(spec, "connect", e))?;
    Ok(Arc::new(HcclGroup { spec: spec.clone(), be: be.clone(), comm: Some((comm, lib)) }))
}

fn hccl_dtype(d: DType) -> Result<HcclDataType, BackendError> {
    Ok(match d {
        DType::F32 => HcclDataType::HCCL_DATA_TYPE_FP32,
        DType::F16 => HcclDataType::HCCL_DATA_TYPE_FP16,
        DType::BF16 => HcclDataType::HCCL_DATA_TYPE_BFP16,
        // Sums of u32 wrap as int32's do.
        DType::U32 => HcclDataType::HCCL_DATA_TYPE_INT32,
        other => return Err(BackendError::Unsupported(format!("HCCL collectives of {other}"))),
    })
}

impl HcclGroup {
    fn bad(&self, op: &'static str, detail: String) -> CommError {
        CommError::InvalidArgument { group: self.spec.name(), op, detail }
    }

    /// Counts of rows as u64 element counts, and their displacements.
    fn elems(counts: &[usize], row: usize) -> (Vec<u64>, Vec<u64>) {
        let c: Vec<u64> = counts.iter().map(|&n| (n * row) as u64).collect();
        let d = c.iter().scan(0u64, |acc, &n| Some(std::mem::replace(acc, *acc + n))).collect();
        (c, d)
    }

    /// Runs one HCCL call, then waits for it within the group's timeout (outside a capture).
    fn run(&self, op: &'static str, call: impl FnOnce(&'static HcclLib, HcclComm) -> hccl_sys::sys::HcclResult) -> Result<(), CommError> {
        let Some((comm, lib)) = self.comm else {
            return Ok(());
        };
        self.be.enqueued();
        lib.check(op, call(lib, comm)).map_err(|e| hccl_err(&self.spec, op, e))?;
        if self.be.capturing() {
            return Ok(());
        }
        let ms = i32::try_from(self.spec.timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: this rank's own stream.
        match unsafe { self.be.shared.acl.synchronize(self.be.stream(), Some(ms)) } {
            Ok(()) => Ok(()),
            Err(e) if e.is_timeout() => {
                let members: Vec<usize> = (0..self.spec.size()).filter(|&m| m != self.spec.rank).collect();
                let ranks = members.iter().map(|&m| self.spec.global_rank_of(m)).collect();
                let mut async_err = hccl_sys::sys::HcclResult::HCCL_SUCCESS;
                // SAFETY: queries this communicator's pending error.
                unsafe { lib.api.HcclGetCommAsyncError(comm, &mut async_err) };
                if async_err != hccl_sys::sys::HcclResult::HCCL_SUCCESS {
                    tracing::error!(group = %self.spec, ?async_err, "HCCL reports an asynchronous error");
                }
                Err(CommError::Timeout { group: self.spec.name(), op, after: self.spec.timeout, missing: members, ranks })
            }
            Err(e) => Err(CommError::Backend(crate::runtime::device_err(e))),
        }
    }

    /// A group of one: `out` is a copy of `mine`'s rows.
    fn local_copy(&self, mine: &Tensor<AscendBackend>, out: &mut Tensor<AscendBackend>) -> Result<(), CommError> {
        if mine.numel() > 0 {
            self.be.copy_block(mine, out, Block::whole(mine))?;
        }
        Ok(())
    }
}

impl Collective<AscendBackend> for HcclGroup {
    fn info(&self) -> &GroupSpec {
        &self.spec
    }

    fn all_reduce_sum(&self, t: &mut Tensor<AscendBackend>) -> Result<(), CommError> {
        let dt = hccl_dtype(t.dtype())?;
        let (p, n) = (t.buffer().as_ptr(), t.numel() as u64);
        if n == 0 {
            return Ok(());
        }
        // SAFETY: in place over the whole tensor, on this rank's stream.
        self.run("all_reduce_sum", |lib, c| unsafe { lib.api.HcclAllReduce(p, p, n, dt, HcclReduceOp::HCCL_REDUCE_SUM, c, self.be.stream()) })
    }

    fn all_gather(&self, mine: &Tensor<AscendBackend>, counts: &[usize], out: &mut Tensor<AscendBackend>) -> Result<(), CommError> {
        checks::collective::all_gather(mine, counts, out, self.spec.rank, self.spec.size()).map_err(|d| self.bad("all_gather", d))?;
        let row = mine.row_len();
        if self.comm.is_none() {
            return self.local_copy(mine, out);
        }
        let dt = hccl_dtype(mine.dtype())?;
        let (rc, rd) = Self::elems(counts, row);
        let (s, o, n) = (mine.buffer().as_ptr(), out.buffer().as_ptr(), (mine.rows() * row) as u64);
        // SAFETY: counts and displacements cover `out`; the arrays live through the wait.
        self.run("all_gather", |lib, c| unsafe { lib.api.HcclAllGatherV(s, n, o, rc.as_ptr().cast(), rd.as_ptr().cast(), dt, c, self.be.stream()) })
    }

    fn reduce_scatter_sum(&self, all: &Tensor<AscendBackend>, counts: &[usize], out: &mut Tensor<AscendBackend>) -> Result<(), CommError> {
        checks::collective::reduce_scatter(all, counts, out, self.spec.rank, self.spec.size()).map_err(|d| self.bad("reduce_scatter_sum", d))?;
        let row = all.row_len();
        if self.comm.is_none() {
            return self.local_copy(all, out);
        }
        let (sc, sd) = Self::elems(counts, row);
        let (s, o, n) = (all.buffer().as_ptr(), out.buffer().as_ptr(), (out.rows() * row) as u64);
        // SAFETY: as all_gather.
        self.run("reduce_scatter_sum", |lib, c| unsafe {
            lib.api.HcclReduceScatterV(s, sc.as_ptr().cast(), sd.as_ptr().cast(), o, n, HcclDataType::HCCL_DATA_TYPE_FP32, HcclReduceOp::HCCL_REDUCE_SUM, c, self.be.stream())
        })
    }

    fn all_to_all(&self, send: &Tensor<AscendBackend>, send_counts: &[usize], recv_counts: &[usize], out: &mut Tensor<AscendBackend>) -> Result<(), CommError> {
        checks::collective::all_to_all(send, send_counts, recv_counts, out, self.spec.size()).map_err(|d| self.bad("all_to_all", d))?;
        let row = send.row_len();
        if self.comm.is_none() {
            return self.local_copy(send, out);
        }
        let dt = hccl_dtype(send.dtype())?;
        let ((sc, sd), (rc, rd)) = (Self::elems(send_counts, row), Self::elems(recv_counts, row));
        let (s, o) = (send.buffer().as_ptr(), out.buffer().as_ptr());
        // SAFETY: as all_gather.
        self.run("all_to_all", |lib, c| unsafe {
            lib.api.HcclAlltoAllV(s, sc.as_ptr().cast(), sd.as_ptr().cast(), dt, o, rc.as_ptr().cast(), rd.as_ptr().cast(), dt, c, self.be.stream())
        })
    }

    fn broadcast(&self, t: &mut Tensor<AscendBackend>, root: usize) -> Result<(), CommError> {
        checks::collective::broadcast(root, self.spec.size()).map_err(|d| self.bad("broadcast", d))?;
        let dt = hccl_dtype(t.dtype())?;
        let (p, n) = (t.buffer().as_ptr(), t.numel() as u64);
        if n == 0 {
            return Ok(());
        }
        // SAFETY: the whole tensor, on this rank's stream.
        self.run("broadcast", |lib, c| unsafe { lib.api.HcclBroadcast(p, n, dt, root as u32, c, self.be.stream()) })
    }

    fn barrier(&self) -> Result<(), CommError> {
        // SAFETY: this communicator, this rank's stream.
        self.run("barrier", |lib, c| unsafe { lib.api.HcclBarrier(c, self.be.stream()) })
    }
}

