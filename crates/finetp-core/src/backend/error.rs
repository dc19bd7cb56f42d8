//! Errors of backend calls and of collectives.

use std::time::Duration;

use super::DType;

/// What a backend call can fail with. Shape and config mistakes are caught in core before any
/// backend call where possible; the `Shape`/`DType` variants are the last line of defence.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    #[error("shape error: {0}")]
    Shape(String),
    #[error("{op}: expected dtype {expected}, got {got}")]
    DType { op: &'static str, expected: &'static str, got: DType },
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("out of device memory allocating {bytes} bytes")]
    OutOfMemory { bytes: usize },
    /// The device, driver or library failed a call; `source` is its own error.
    #[error("device error: {what}: {source}")]
    Device { what: String, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("{backend} backend unavailable: {missing} ({hint})")]
    Unavailable { backend: &'static str, missing: String, hint: String },
}

impl BackendError {
    /// A device failure from the library's own error.
    pub fn device(what: impl Into<String>, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        BackendError::Device { what: what.into(), source: source.into() }
    }
}

/// What a collective can fail with. Every collective has a timeout: a member that never
/// arrives, or dies, turns into an error on every other member instead of a hang.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommError {
    /// `missing` are positions in the group, `ranks` the same members' global ranks.
    #[error(
        "{op} on group {group} timed out after {after:?}: global ranks {ranks:?} (members {missing:?} of the group) never arrived"
    )]
    Timeout { group: String, op: &'static str, after: Duration, missing: Vec<usize>, ranks: Vec<usize> },
    #[error("{op} on group {group}: member {member} (global rank {global_rank}) has left the group (its rank died or dropped its handle)")]
    PeerFailed { group: String, op: &'static str, member: usize, global_rank: usize },
    #[error("{op} on group {group}: members disagree: {detail}")]
    Mismatch { group: String, op: &'static str, detail: String },
    #[error("{op} on group {group}: bad arguments: {detail}")]
    InvalidArgument { group: String, op: &'static str, detail: String },
    /// The transport between processes failed (an MPI error), or the job is being ended
    /// under the collective (the launcher's SIGTERM).
    #[error("{op} on group {group}: {detail}")]
    Transport { group: String, op: &'static str, detail: String },
    #[error(transparent)]
    Backend(#[from] BackendError),
}
