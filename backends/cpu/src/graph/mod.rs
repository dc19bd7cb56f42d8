//! Graph capture on the CPU: a recorded op list.
//!
//! While a rank thread captures, every call on its [`CpuBackend`] and its in-process
//! communicators runs as usual *and* is recorded as a closure over its tensors' raw buffers
//! ([`Alias`]). Replaying runs the closures again in order. Three rules make that sound and
//! equal to eager execution:
//! - **buffers stay put**: a tensor dropped during capture does not free its memory; its
//!   storage moves into the recording (see `Drop for CpuStorage`) and lives as long as the
//!   graph. A `Vec`'s heap block does not move when the `Vec` does, so the recorded pointers
//!   stay valid;
//! - **fresh buffers are fresh every replay**: `zeros` during capture also records a
//!   `fill_zero`, so code that accumulates into a new buffer sees zeros at every replay, as
//!   it does eagerly;
//! - **no host round trips**: `download`, `upload` and `write` during capture fail
//!   with [`BackendError::Unsupported`]: their results would be frozen into the graph.
//!
//! The recording is thread-local: ranks are threads, and each captures only its own calls.

pub(crate) mod launch;
pub(crate) mod recording;

pub use recording::CpuGraph;
