//! # finetp-model-qwen
//!
//! Qwen2 and Qwen3 differ from Llama only inside attention — Qwen2 adds a bias to the q/k/v
//! projections, Qwen3 normalises q and k per head — and the Llama blocks already take both
//! from the config (`ModelConfig::qkv_bias`, `ModelConfig::qk_norm`). This crate is the
//! Qwen-named entry point that refuses non-Qwen checkpoints.

use finetp_core::backend::Device;
use finetp_core::config::{Architecture, ModelConfig};
use finetp_core::decoder::ModelError;
use finetp_core::parallel::GroupSet;
use finetp_core::shard::WeightSource;
use finetp_model_llama::Llama;

pub use finetp_model_llama::tensor_shapes;

/// A Qwen2/Qwen3 model: the Llama decoder with Qwen's attention variants.
pub type Qwen<B> = Llama<B>;

/// Loads a Qwen2 or Qwen3 checkpoint.
///
/// # Errors
/// [`ModelError::Config`] for another architecture; otherwise as [`Llama::load`].
pub fn load<B: Device>(be: &B, cfg: &ModelConfig, src: &dyn WeightSource, groups: &GroupSet<B>) -> Result<Qwen<B>, ModelError> {
    if !matches!(cfg.architecture, Architecture::Qwen2 | Architecture::Qwen3) {
        return Err(ModelError::Config(format!("{:?} is not a Qwen model (model_type qwen2 or qwen3)", cfg.architecture)));
    }
    Llama::load(be, cfg, src, groups)
}
