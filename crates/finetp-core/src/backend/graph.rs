//! Graph capture: record a step's device calls once, replay them every step.
//!
//! A captured graph is what CUDA graphs are to CUDA and a recorded op list is to the CPU
//! backend: the calls issued on one backend handle (and on its communicators) between
//! [`Backend::begin_capture`](super::Backend::begin_capture) and
//! [`Backend::end_capture`](super::Backend::end_capture), with their buffers fixed. Replaying
//! it re-runs exactly those calls on exactly those buffers, so everything that changes between
//! steps (token ids, positions, KV-cache slots) must live in device tensors that the caller
//! rewrites before each replay (see [`Backend::write`](super::Backend::write)); host arguments
//! of a call (shapes, counts, scales) are frozen at capture.
//!
//! Contract for backends:
//! - tensors allocated during capture stay alive as long as the graph, even if the code that
//!   allocated them drops them (CUDA: a private memory pool; CPU: the graph keeps them);
//! - a call that needs the host during capture (a download, an upload or write of fresh host
//!   data) fails with [`BackendError::Unsupported`] rather than freezing a value;
//! - whether the captured calls also ran during capture is backend-specific (the CPU runs
//!   them, CUDA does not): the caller always replays once to get results.

use super::{BackendError, CommError};

/// What a replayed call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Comm(#[from] CommError),
}

/// A captured step, ready to replay.
pub trait CapturedGraph: Send {
    /// Number of recorded calls (kernels, GEMMs, copies, collectives).
    fn ops(&self) -> usize;

    /// Runs every recorded call again, in order, on the buffers it was recorded with.
    ///
    /// # Safety
    /// Every tensor that a recorded call touched and that was still owned outside the graph
    /// when capture ended (weights, the KV cache, the step's input and output tensors) must be
    /// alive and not accessed by anything else for the duration of the call. Tensors that were
    /// dropped during capture are the graph's own and need nothing.
    unsafe fn replay(&mut self) -> Result<(), ReplayError>;
}
