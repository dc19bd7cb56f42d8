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
    /// A rank found its run impossible (its ranks disagree on the run, its cache does not fit).
    #[error("rank {rank}: {detail}")]
    Run { rank: usize, detail: String },
    #[error("{}", not_compiled_message(*backend))]
    NotCompiled { backend: BackendKind },
    /// The processes of a multi-process job could not start or meet (MPI), or their results
    /// could not be gathered.
    #[error("MPI launcher: {detail}")]
    Launch { detail: String },
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
            | EngineError::Spawn { rank, .. }
            | EngineError::Run { rank, .. } => Some(*rank),
            EngineError::Config(_) | EngineError::NotCompiled { .. } | EngineError::Launch { .. } => None,
        }
    }

    /// The collective error inside, if this is one.
    fn comm(&self) -> Option<&CommError> {
        match self {
            EngineError::Comm { source, .. } | EngineError::Connect { source, .. } => Some(source),
            EngineError::Model { source: ModelError::Comm(c) | ModelError::Layer(LayerError::Comm(c)), .. } => Some(c),
            EngineError::Replay { source: ReplayError::Comm(c), .. } => Some(c),
            _ => None,
        }
    }

    /// How likely this error is the root cause of a failed run, highest first: a rank's own
    /// failure (device, model, panic), then its own bad collective arguments, then the peers'
    /// views of them (disagreeing calls, a member that never came, a member that left).
    pub fn root_cause_rank(&self) -> u8 {
        match self.comm() {
            None => 5,
            Some(CommError::Backend(_)) => 5,
            Some(CommError::InvalidArgument { .. }) => 4,
            Some(CommError::Mismatch { .. }) => 3,
            Some(CommError::Timeout { .. }) => 2,
            Some(CommError::PeerFailed { .. }) => 1,
            Some(_) => 2,
        }
    }

    /// Whether the run failed on its input: a checkpoint whose tensors are missing, mis-shaped,
    /// not finite or not what its config describes (found while a rank loads its shard), as
    /// opposed to a fault while running.
    pub fn is_bad_input(&self) -> bool {
        use finetp_core::shard::LoadError;
        match self {
            EngineError::Model { source, .. } => match source {
                ModelError::Config(_) | ModelError::Layer(LayerError::Shape { .. }) => true,
                ModelError::Layer(LayerError::Load(l)) => !matches!(l, LoadError::Backend(_)),
                _ => false,
            },
            _ => false,
        }
    }

    /// A layer error on `rank`.
    pub fn layer(rank: usize, e: LayerError) -> Self {
        EngineError::Model { rank, source: ModelError::Layer(e) }
    }
}
