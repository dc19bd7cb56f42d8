//! Collectives for wgpu ranks, staged through host memory.
//!
//! Each rank owns its own `wgpu::Device`, and devices cannot read each other's buffers, so a
//! collective moves its tensors to the host, runs the CPU backend's in-process collective on
//! them (the same code, checks and timeouts as CPU ranks: there is no second implementation),
//! and moves the result back. [`staged_groups`] wraps a rank's CPU [`GroupSet`] (from
//! [`Fabric::connect`](finetp_backend_cpu::comm::Fabric::connect)) this way.
//!
//! # Copies
//! On top of the CPU collective's own traffic (documented in [`finetp_backend_cpu::comm`]),
//! every input tensor of `B` bytes costs, on the way out:
//! 1. a wait for everything enqueued so far (the collective is a sync point);
//! 2. a device copy into a mappable staging buffer (on lavapipe a memcpy);
//! 3. a memcpy from the mapped staging buffer into a host `Vec` (the CPU tensor);
//!
//! and every output tensor, on the way back (not waited for: the copy is enqueued):
//! 4. a memcpy from the host tensor into a fresh mapped staging buffer;
//! 5. a device copy from it into the output buffer.
//!
//! So an all-reduce of `B` bytes adds 4·B bytes of copies and one device round trip per
//! member; `broadcast` skips steps 1–3 on non-root members (their input is overwritten) and
//! `barrier` moves nothing. A group of one member stages nothing at all: its collectives are
//! a device-side copy or nothing (the CPU collective still checks the arguments). `backends/wgpu/benches/staging.rs` measures the overhead.

use std::sync::Arc;

use finetp_backend_cpu::{CpuBackend, CpuStorage, CpuTensor};
use finetp_core::backend::{Backend, BackendError, Collective, CommError, GroupInfo, HostData, Tensor};
use finetp_core::parallel::GroupSet;

use crate::{WgpuBackend, WgpuTensor};

/// A member's communicator for wgpu tensors: the CPU collective `cpu`, with every tensor
/// staged through the host of the rank whose device is `be`.
pub struct StagedComm {
    be: WgpuBackend,
    cpu: Arc<dyn Collective<CpuBackend>>,
}

impl StagedComm {
    pub fn new(be: &WgpuBackend, cpu: Arc<dyn Collective<CpuBackend>>) -> Self {
        Self { be: be.clone(), cpu }
    }

    /// Device → host: a CPU tensor with the same shape, dtype and contents.
    fn down(&self, t: &WgpuTensor) -> Result<CpuTensor, CommError> {
        let host = self.be.download(t)?;
        let buf = match host.data {
            HostData::F32(v) => CpuStorage::F32(v),
            HostData::F16(v) => CpuStorage::F16(v),
            HostData::BF16(v) => CpuStorage::BF16(v),
            HostData::U32(v) => CpuStorage::U32(v),
        };
        Ok(Tensor::from_parts(buf, host.shape, t.dtype()))
    }

    /// A zero CPU tensor shaped like `t`, for outputs whose contents are overwritten.
    fn like(t: &WgpuTensor) -> CpuTensor {
        Tensor::from_parts(CpuStorage::zeros(t.dtype(), t.numel()), t.shape().to_vec(), t.dtype())
    }

    /// A group of one: nothing to exchange, so nothing is staged. The CPU collective still
    /// runs, on zero tensors of the same shapes, so its argument checks (and their errors) are
    /// exactly a staged call's; the data then moves on the device with `local` (a copy or
    /// nothing), without a sync point.
    fn solo(&self) -> bool {
        self.cpu.info().size() == 1
    }

    /// Rows `0..rows` of `src` into `dst`, on the device (`src` and `dst` have equal rows).
    fn local_copy(&self, src: &WgpuTensor, dst: &mut WgpuTensor, rows: usize) -> Result<(), CommError> {
        Ok(self.be.copy_block(src, 0, 0, dst, 0, 0, rows, src.row_len())?)
    }

    /// Host → device: `src` into `dst` (same shape and dtype), enqueued.
    fn up(&self, src: &CpuTensor, dst: &mut WgpuTensor) -> Result<(), CommError> {
        if src.shape() != dst.shape() || src.dtype() != dst.dtype() {
            return Err(CommError::Backend(BackendError::Shape(format!(
                "staged collective: result {:?} {} for a tensor {:?} {}",
                src.shape(),
                src.dtype(),
                dst.shape(),
                dst.dtype()
            ))));
        }
        Ok(self.be.write_bytes(dst, src.buffer().as_bytes())?)
    }
}

impl Collective<WgpuBackend> for StagedComm {
    fn info(&self) -> &GroupInfo {
        self.cpu.info()
    }

    fn all_reduce_sum(&self, t: &mut WgpuTensor) -> Result<(), CommError> {
        if self.solo() {
            // The sum over one member is the tensor itself.
            return self.cpu.all_reduce_sum(&mut Self::like(t));
        }
        let mut c = self.down(t)?;
        self.cpu.all_reduce_sum(&mut c)?;
        self.up(&c, t)
    }

    fn all_gather(&self, mine: &WgpuTensor, counts: &[usize], out: &mut WgpuTensor) -> Result<(), CommError> {
        if self.solo() {
            self.cpu.all_gather(&Self::like(mine), counts, &mut Self::like(out))?;
            return self.local_copy(mine, out, mine.rows());
        }
        let m = self.down(mine)?;
        let mut o = Self::like(out);
        self.cpu.all_gather(&m, counts, &mut o)?;
        self.up(&o, out)
    }

    fn reduce_scatter_sum(&self, all: &WgpuTensor, counts: &[usize], out: &mut WgpuTensor) -> Result<(), CommError> {
        if self.solo() {
            self.cpu.reduce_scatter_sum(&Self::like(all), counts, &mut Self::like(out))?;
            return self.local_copy(all, out, out.rows());
        }
        let a = self.down(all)?;
        let mut o = Self::like(out);
        self.cpu.reduce_scatter_sum(&a, counts, &mut o)?;
        self.up(&o, out)
    }

    fn all_to_all(&self, send: &WgpuTensor, send_counts: &[usize], recv_counts: &[usize], out: &mut WgpuTensor) -> Result<(), CommError> {
        if self.solo() {
            self.cpu.all_to_all(&Self::like(send), send_counts, recv_counts, &mut Self::like(out))?;
            return self.local_copy(send, out, out.rows());
        }
        let s = self.down(send)?;
        let mut o = Self::like(out);
        self.cpu.all_to_all(&s, send_counts, recv_counts, &mut o)?;
        self.up(&o, out)
    }

    fn broadcast(&self, t: &mut WgpuTensor, root: usize) -> Result<(), CommError> {
        if self.solo() {
            return self.cpu.broadcast(&mut Self::like(t), root);
        }
        // Only the root's contents matter; the others' are overwritten.
        let mut c = if self.cpu.info().rank == root { self.down(t)? } else { Self::like(t) };
        self.cpu.broadcast(&mut c, root)?;
        if self.cpu.info().rank == root {
            return Ok(());
        }
        self.up(&c, t)
    }

    fn barrier(&self) -> Result<(), CommError> {
        self.cpu.barrier()
    }
}

/// A rank's wgpu communicators: each of its CPU communicators (component groups and DP
/// group), staged through the host of `be`.
pub fn staged_groups(be: &WgpuBackend, cpu: GroupSet<CpuBackend>) -> GroupSet<WgpuBackend> {
    let wrap = |c: Arc<dyn Collective<CpuBackend>>| -> Arc<dyn Collective<WgpuBackend>> { Arc::new(StagedComm::new(be, c)) };
    GroupSet { embedding: wrap(cpu.embedding), lm_head: wrap(cpu.lm_head), o_proj: wrap(cpu.o_proj), mlp: wrap(cpu.mlp), dp: wrap(cpu.dp) }
}
