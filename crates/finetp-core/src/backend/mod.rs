//! The contract every accelerator backend implements.
//!
//! One type parameter, `B: Backend`, carries everything backend-specific: its buffer type
//! ([`Backend::Buffer`]), its memory operations, its GEMM ([`Gemm`]) and kernels ([`Kernels`]).
//! Communication is separate: a [`Collective`] is a per-group communicator built from the
//! planner's rank list, as an NCCL/HCCL communicator is; layers hold the one for their
//! component and never name a group id.
//!
//! Layers, models and the engine are written once against `B: Device` (all three traits).

mod collective;
mod dtype;
mod error;
mod host;
mod ops;
mod tensor;

pub use collective::{Collective, GroupInfo, total_rows};
pub use dtype::DType;
pub use error::{BackendError, CommError};
pub use host::{HostData, HostTensor};
pub use ops::{Gemm, Kernels, RopeStyle};
pub use tensor::Tensor;

/// A device handle with its own memory and (for asynchronous backends) its own stream.
///
/// Each rank owns one handle; handles are `Send` so a rank's thread can own it.
pub trait Backend: Send + Sync + Sized + 'static {
    /// Owned device memory of one tensor.
    type Buffer: Send + Sync + 'static;

    /// Short lowercase name, e.g. `"cpu"`, `"cuda"`.
    const NAME: &'static str;

    /// A human-readable description of the device (printed by the CLI and the tests).
    fn describe(&self) -> String;

    /// A zero-filled tensor.
    fn zeros(&self, shape: &[usize], dtype: crate::backend::DType) -> Result<Tensor<Self>, BackendError>;

    /// Copies host data to the device.
    fn upload(&self, host: &HostTensor) -> Result<Tensor<Self>, BackendError>;

    /// Copies a tensor back to the host (a sync point).
    fn download(&self, t: &Tensor<Self>) -> Result<HostTensor, BackendError>;

    /// Waits until every enqueued call has finished.
    fn synchronize(&self) -> Result<(), BackendError>;

    /// Copies a 2-D block: rows `src_row..src_row + rows` and columns `src_col..src_col + cols`
    /// of `src` (viewed as `[rows, row_len]`) into `dst` at `(dst_row, dst_col)`. Same dtype.
    /// Slicing heads, concatenating, padding and writing the KV cache are all this one call.
    #[allow(clippy::too_many_arguments)]
    fn copy_block(
        &self,
        src: &Tensor<Self>,
        src_row: usize,
        src_col: usize,
        dst: &mut Tensor<Self>,
        dst_row: usize,
        dst_col: usize,
        rows: usize,
        cols: usize,
    ) -> Result<(), BackendError>;

    /// Sets every element to zero.
    fn fill_zero(&self, t: &mut Tensor<Self>) -> Result<(), BackendError>;
}

/// Everything a decoder needs from one accelerator.
pub trait Device: Backend + Gemm + Kernels {}

impl<B: Backend + Gemm + Kernels> Device for B {}
