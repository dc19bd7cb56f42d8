//! Collectives for any backend without a collective library of its own, staged through host
//! memory over the CPU collectives (in-process, or across processes under `mpirun`).
//!
//! Each rank owns its own device, and devices cannot read each other's buffers, so a collective
//! downloads its tensors, runs the CPU backend's in-process collective on them (the same code,
//! checks and timeouts as CPU ranks: there is no second implementation), and writes the result
//! back. wgpu uses it; a CUDA or Ascend backend can, before its NCCL/HCCL path exists.
//!
//! # Copies
//! On top of the CPU collective's own traffic (see [`crate::comm`]), every input tensor of `B`
//! bytes costs one [`download`](Backend::download) (a sync point: it waits for everything
//! enqueued so far) and every output one [`write`](Backend::write) (enqueued). Sums of 16-bit
//! float activations are taken in f32 on the host (a widening on the way out, a rounding on the
//! way back). `broadcast` downloads nothing on non-root members (their input is overwritten)
//! and `barrier` moves nothing. A group of one stages nothing: its collectives are a device
//! copy or nothing (the CPU collective still checks the arguments, on zero tensors of the same
//! shapes, so its errors are exactly a staged call's).

use std::sync::Arc;

use finetp_core::backend::{Backend, BackendError, Block, Collective, CommError, DType, GroupSpec, HostTensor, Rendezvous, Tensor};

use super::connect_host;
use crate::{CpuBackend, CpuStorage, CpuTensor};

/// A member's communicator for tensors of backend `B`: the CPU collective `cpu`, with every
/// tensor staged through the host of the rank whose device is `be`.
pub struct StagedComm<B: Backend + Clone> {
    be: B,
    cpu: Arc<dyn Collective<CpuBackend>>,
}

/// The staged communicator of this member of `spec` on device `be`: what a backend without a
/// collective library answers [`Backend::connect`] with.
///
/// # Errors
/// As [`connect_host`].
pub fn connect_staged<B: Backend + Clone>(be: &B, spec: &GroupSpec, rv: &dyn Rendezvous) -> Result<Arc<dyn Collective<B>>, CommError> {
    let cpu = connect_host(spec, rv)?;
    Ok(Arc::new(StagedComm::new(be, cpu)))
}

/// Whether a collective sums (the host sums 16-bit floats in f32).
#[derive(Clone, Copy, PartialEq)]
enum Sum {
    Yes,
    No,
}

impl<B: Backend + Clone> StagedComm<B> {
    pub fn new(be: &B, cpu: Arc<dyn Collective<CpuBackend>>) -> Self {
        Self { be: be.clone(), cpu }
    }

    /// The dtype a tensor has on the host side of the collective.
    fn host_dtype(dtype: DType, sum: Sum) -> DType {
        if sum == Sum::Yes && matches!(dtype, DType::BF16 | DType::F16) { DType::F32 } else { dtype }
    }

    /// Device → host: a CPU tensor with the same shape and contents.
    fn down(&self, t: &Tensor<B>, sum: Sum) -> Result<CpuTensor, CommError> {
        let host = self.be.download(t)?;
        let host = host.into_dtype(Self::host_dtype(t.dtype(), sum))?;
        let dtype = host.dtype();
        Ok(Tensor::from_parts(CpuStorage::from_host(host.data), host.shape, dtype))
    }

    /// A zero CPU tensor shaped like `t`, for outputs whose contents are overwritten.
    fn like(t: &Tensor<B>, sum: Sum) -> Result<CpuTensor, CommError> {
        let dtype = Self::host_dtype(t.dtype(), sum);
        Ok(Tensor::from_parts(CpuStorage::zeros(dtype, t.numel())?, t.shape().to_vec(), dtype))
    }

    fn solo(&self) -> bool {
        self.cpu.info().size() == 1
    }

    /// Rows `0..rows` of `src` into `dst`, on the device (`src` and `dst` have equal rows).
    fn local_copy(&self, src: &Tensor<B>, dst: &mut Tensor<B>, rows: usize) -> Result<(), CommError> {
        Ok(self.be.copy_block(src, dst, Block::rows(0, 0, rows, src.row_len()))?)
    }

    /// Host → device: `src` into `dst` (same shape), rounded back to `dst`'s dtype, enqueued.
    fn up(&self, src: CpuTensor, dst: &mut Tensor<B>) -> Result<(), CommError> {
        if src.shape() != dst.shape() {
            return Err(CommError::Backend(BackendError::Shape(format!(
                "staged collective: result {:?} for a tensor {:?}",
                src.shape(),
                dst.shape()
            ))));
        }
        let shape = src.shape().to_vec();
        let host = HostTensor::new(src.into_buffer().into_host(), &shape)?.into_dtype(dst.dtype())?;
        Ok(self.be.write(dst, &host)?)
    }
}

impl<B: Backend + Clone> Collective<B> for StagedComm<B> {
    fn info(&self) -> &GroupSpec {
        self.cpu.info()
    }

    fn all_reduce_sum(&self, t: &mut Tensor<B>) -> Result<(), CommError> {
        if self.solo() {
            // The sum over one member is the tensor itself.
            return self.cpu.all_reduce_sum(&mut Self::like(t, Sum::Yes)?);
        }
        let mut c = self.down(t, Sum::Yes)?;
        self.cpu.all_reduce_sum(&mut c)?;
        self.up(c, t)
    }

    fn all_gather(&self, mine: &Tensor<B>, counts: &[usize], out: &mut Tensor<B>) -> Result<(), CommError> {
        if self.solo() {
            self.cpu.all_gather(&Self::like(mine, Sum::No)?, counts, &mut Self::like(out, Sum::No)?)?;
            return self.local_copy(mine, out, mine.rows());
        }
        let m = self.down(mine, Sum::No)?;
        let mut o = Self::like(out, Sum::No)?;
        self.cpu.all_gather(&m, counts, &mut o)?;
        self.up(o, out)
    }

    fn reduce_scatter_sum(&self, all: &Tensor<B>, counts: &[usize], out: &mut Tensor<B>) -> Result<(), CommError> {
        if self.solo() {
            self.cpu.reduce_scatter_sum(&Self::like(all, Sum::Yes)?, counts, &mut Self::like(out, Sum::Yes)?)?;
            return self.local_copy(all, out, out.rows());
        }
        let a = self.down(all, Sum::Yes)?;
        let mut o = Self::like(out, Sum::Yes)?;
        self.cpu.reduce_scatter_sum(&a, counts, &mut o)?;
        self.up(o, out)
    }

    fn all_to_all(&self, send: &Tensor<B>, send_counts: &[usize], recv_counts: &[usize], out: &mut Tensor<B>) -> Result<(), CommError> {
        if self.solo() {
            self.cpu.all_to_all(&Self::like(send, Sum::No)?, send_counts, recv_counts, &mut Self::like(out, Sum::No)?)?;
            return self.local_copy(send, out, out.rows());
        }
        let s = self.down(send, Sum::No)?;
        let mut o = Self::like(out, Sum::No)?;
        self.cpu.all_to_all(&s, send_counts, recv_counts, &mut o)?;
        self.up(o, out)
    }

    fn broadcast(&self, t: &mut Tensor<B>, root: usize) -> Result<(), CommError> {
        if self.solo() {
            return self.cpu.broadcast(&mut Self::like(t, Sum::No)?, root);
        }
        // Only the root's contents matter; the others' are overwritten.
        let is_root = self.cpu.info().rank == root;
        let mut c = if is_root { self.down(t, Sum::No)? } else { Self::like(t, Sum::No)? };
        self.cpu.broadcast(&mut c, root)?;
        if is_root {
            return Ok(());
        }
        self.up(c, t)
    }

    fn barrier(&self) -> Result<(), CommError> {
        self.cpu.barrier()
    }
}
