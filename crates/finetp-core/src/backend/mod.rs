//! The contract every accelerator backend implements.
//!
//! One type parameter, `B: Backend`, carries everything backend-specific: its buffer type
//! ([`Backend::Buffer`]), its memory operations, its GEMM ([`Gemm`]) and kernels ([`Kernels`]).
//! Communication is separate: a [`Collective`] is a per-group communicator built from the
//! planner's rank list, as an NCCL/HCCL communicator is; layers hold the one for their
//! component and never name a group id.
//!
//! Layers, models and the engine are written once against `B: Device` (all three traits).

pub mod checks;
mod collective;
mod dtype;
mod error;
mod graph;
mod host;
mod ops;
mod tensor;

pub use collective::{Collective, GroupInfo, total_rows};
pub use dtype::DType;
pub use error::{BackendError, CommError};
pub use graph::{CapturedGraph, ReplayError};
pub use host::{HostData, HostTensor};
pub use ops::{Gemm, Kernels, PAD_SLOT, RopeStyle};
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

    /// Copies host data into an existing tensor of the same shape and dtype: how a step's inputs
    /// reach the fixed buffers of a captured graph. The default uploads a temporary and copies
    /// it over; backends with a direct host-to-device copy override it.
    fn write(&self, t: &mut Tensor<Self>, host: &HostTensor) -> Result<(), BackendError> {
        if host.shape != t.shape() || host.dtype() != t.dtype() {
            return Err(BackendError::Shape(format!(
                "write: host {:?} {} into a tensor {:?} {}",
                host.shape,
                host.dtype(),
                t.shape(),
                t.dtype()
            )));
        }
        let tmp = self.upload(host)?;
        self.copy_block(&tmp, 0, 0, t, 0, 0, t.rows(), t.row_len())
    }

    /// Starts recording every call made on this handle (and on its communicators) from this
    /// thread into a graph (see [`CapturedGraph`]). Backends that cannot capture say so here;
    /// the engine then runs graph mode's static shapes eagerly.
    fn begin_capture(&self) -> Result<(), BackendError> {
        Err(BackendError::Unsupported(format!("the {} backend cannot capture graphs", Self::NAME)))
    }

    /// Stops recording and returns the graph. Called after [`Backend::begin_capture`] whatever
    /// happened in between (the capture ends, and is dropped, on error too).
    fn end_capture(&self) -> Result<Box<dyn CapturedGraph>, BackendError> {
        Err(BackendError::Unsupported(format!("the {} backend cannot capture graphs", Self::NAME)))
    }
}

/// Everything a decoder needs from one accelerator.
pub trait Device: Backend + Gemm + Kernels {}

impl<B: Backend + Gemm + Kernels> Device for B {}
