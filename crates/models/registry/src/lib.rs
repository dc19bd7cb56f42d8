//! # finetp-models
//!
//! The model registry: the architecture a checkpoint names (`config.json`'s `architectures` /
//! `model_type`, GGUF's `general.architecture`, parsed into
//! `finetp_core::config::Architecture` by the config) picks the model crate
//! that builds it. The CLI and the engine never name a model type; a new architecture is one
//! arm here.
//!
//! | architecture | crate | what differs |
//! |---|---|---|
//! | Llama, Mistral | `finetp-model-llama` | Mistral: sliding attention window |
//! | Qwen2, Qwen3 | `finetp-model-qwen` (Llama blocks) | Qwen2: q/k/v bias; Qwen3: q/k norms |
//! | DeepSeek-V2, -V3 | `finetp-model-deepseek` | MLA; dense and MoE layers, routing per config |

use finetp_core::backend::Device;
use finetp_core::config::{Architecture, ModelConfig};
use finetp_core::decoder::{CausalLm, ModelError};
use finetp_core::parallel::GroupSet;
use finetp_core::shard::WeightSource;

/// Loads this rank's shard of the model `cfg` describes, as the model its architecture names.
///
/// # Errors
/// Whatever the model's `load` fails with: a missing or mis-shaped tensor, a config the model
/// cannot run.
pub fn load<B: Device>(be: &B, cfg: &ModelConfig, src: &dyn WeightSource, groups: &GroupSet<B>) -> Result<Box<dyn CausalLm<B>>, ModelError> {
    Ok(match cfg.architecture {
        Architecture::Llama | Architecture::Mistral => Box::new(finetp_model_llama::Llama::load(be, cfg, src, groups)?),
        Architecture::Qwen2 | Architecture::Qwen3 => Box::new(finetp_model_qwen::load(be, cfg, src, groups)?),
        Architecture::DeepseekV2 | Architecture::DeepseekV3 => Box::new(finetp_model_deepseek::Deepseek::load(be, cfg, src, groups)?),
    })
}

/// Every HF tensor name and shape the architecture's model reads for `cfg` (for writing test
/// checkpoints and checking files).
pub fn tensor_shapes(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    match cfg.architecture {
        Architecture::Llama | Architecture::Mistral | Architecture::Qwen2 | Architecture::Qwen3 => finetp_model_llama::tensor_shapes(cfg),
        Architecture::DeepseekV2 | Architecture::DeepseekV3 => finetp_model_deepseek::tensor_shapes(cfg),
    }
}
