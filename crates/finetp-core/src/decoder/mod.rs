//! What a decoder model and the engine exchange each step, and the pieces every decoder shares
//! (KV cache, per-sequence causal attention, RoPE frequencies).

mod attention;
mod batch;
mod heads;
mod kv_cache;
mod rope;

pub use attention::{cached_attention, logit_rows};
pub use batch::{StepBatch, StepInputs};
pub use heads::HeadShard;
pub use kv_cache::{KV_BLOCK_SIZE, KvCache, KvLayout};
pub use rope::{deepseek_softmax_mscale, rope_frequencies, rope_table};

use crate::backend::{BackendError, CommError, Device, Tensor};
use crate::layers::LayerError;

/// What a model's forward can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Comm(#[from] CommError),
    #[error("model config: {0}")]
    Config(String),
    #[error("batch: {0}")]
    Batch(String),
}

impl From<crate::shard::LoadError> for ModelError {
    fn from(e: crate::shard::LoadError) -> Self {
        ModelError::Layer(LayerError::Load(e))
    }
}

/// Resident weight bytes of one module class on this rank, measured from live buffers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ModuleBytes {
    pub module: &'static str,
    pub bytes: usize,
}

/// Read back when ranks in other processes send their reports: module names are interned
/// ([`crate::intern`]), so the type keeps the `&'static str` the models report.
impl<'de> serde::Deserialize<'de> for ModuleBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        struct Owned {
            module: String,
            bytes: usize,
        }
        let Owned { module, bytes } = Owned::deserialize(d)?;
        Ok(Self { module: crate::intern(&module), bytes })
    }
}

/// A causal language model on one rank. Object-safe so the engine can hold any model.
pub trait CausalLm<B: Device>: Send {
    /// Runs one step: `batch` holds this rank's tokens (possibly none: an idle rank still
    /// calls, so its groups' collectives stay in lock-step). Returns logits (activation dtype)
    /// `[batch.logit_rows_len(), vocab]`, one row per entry of `batch.logit_rows`.
    ///
    /// Everything that varies between steps is read from `batch`'s device tensors, so the
    /// engine can capture a decode step once and replay it (graph mode).
    fn forward(&self, be: &B, batch: &StepBatch<B>, kv: &mut KvCache<B>) -> Result<Tensor<B>, ModelError>;

    /// An empty KV cache of `layout`'s blocks.
    fn new_kv_cache(&self, be: &B, layout: KvLayout) -> Result<KvCache<B>, ModelError>;

    /// Vocabulary size (columns of the logits).
    fn vocab_size(&self) -> usize;

    /// Weight bytes per module class, measured from the live buffers.
    fn weight_bytes(&self) -> Vec<ModuleBytes>;
}
