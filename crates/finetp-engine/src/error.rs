//! What a run can fail with: each variant names the rank and keeps its source error.

use finetp_core::backend::{BackendError, CommError, ReplayError};
use finetp_core::decoder::ModelError;
use finetp_core::layers::LayerError;

use crate::dispatch::BackendKind;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error("rank {rank}: cannot open its device: {source}")]
    Open { rank: usize, source: BackendError },
    #[error("rank {rank}: cannot connect its groups: {source}")]
    Connect { rank: usize, source: CommError },
    #[error("rank {rank}: {source}")]
    Model { rank: usize, source: ModelError },
    #[error("rank {rank}: {source}")]
    Comm { rank: usize, source: CommError },
    #[error("rank {rank}: {source}")]
    Backend { rank: usize, source: BackendError },
    #[error("rank {rank}: graph replay failed: {source}")]
    Replay { rank: usize, source: ReplayError },
    #[error("rank {rank} panicked: {message}")]
    Panicked { rank: usize, message: String },
    #[error("rank {rank}: cannot start its thread: {source}")]
    Spawn { rank: usize, source: std::io::Error },
    /// A request or layout the engine cannot run (caught before any rank starts).
    #[error("{0}")]
    Config(String),
    #[error("{}", not_compiled_message(*backend))]
    NotCompiled { backend: BackendKind },
}

fn not_compiled_message(b: BackendKind) -> String {
    let compiled: Vec<&str> = BackendKind::ALL.iter().filter(|k| k.compiled()).map(|k| k.name()).collect();
    match b.build_command() {
        Some(cmd) => format!(
            "the {} backend is not compiled into this binary (it has: {}); build one that has it with `{cmd}`",
            b.name(),
            compiled.join(", ")
        ),
        None => format!(
            "the {} backend is not part of this version of finetp yet (this binary has: {}; backends that exist: {})",
            b.name(),
            compiled.join(", "),
            BackendKind::ALL.iter().filter(|k| k.exists()).map(|k| k.name()).collect::<Vec<_>>().join(", ")
        ),
    }
}

impl EngineError {
    /// The rank the error happened on, if it is a rank's.
    pub fn rank(&self) -> Option<usize> {
        match self {
            EngineError::Open { rank, .. }
            | EngineError::Connect { rank, .. }
            | EngineError::Model { rank, .. }
            | EngineError::Comm { rank, .. }
            | EngineError::Backend { rank, .. }
            | EngineError::Replay { rank, .. }
            | EngineError::Panicked { rank, .. }
            | EngineError::Spawn { rank, .. } => Some(*rank),
            EngineError::Config(_) | EngineError::NotCompiled { .. } => None,
        }
    }

    /// Errors that only echo another rank's failure (a peer left); a report prefers a root cause.
    pub fn is_echo(&self) -> bool {
        let comm = match self {
            EngineError::Comm { source, .. } | EngineError::Connect { source, .. } => Some(source),
            EngineError::Model { source: ModelError::Comm(c) | ModelError::Layer(LayerError::Comm(c)), .. } => Some(c),
            EngineError::Replay { source: ReplayError::Comm(c), .. } => Some(c),
            _ => None,
        };
        matches!(comm, Some(CommError::PeerFailed { .. }))
    }

    /// A layer error on `rank`.
    pub fn layer(rank: usize, e: LayerError) -> Self {
        EngineError::Model { rank, source: ModelError::Layer(e) }
    }
}
