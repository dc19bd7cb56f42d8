//! Configuration: the vLLM-Ascend flags, `finegrained_tp_config`, and the model's shapes.
//! Everything is validated here, up front, with typed errors.

mod architecture;
mod component;
mod deepseek;
mod error;
mod fields;
mod finegrained;
mod model;
mod parallel;
mod rope_scaling;

pub use architecture::Architecture;
pub use component::Component;
pub use deepseek::{MlaConfig, MoeConfig, MoeScoring, TopkMethod};
pub use error::{ConfigError, ModelConfigError};
pub use finegrained::{AdditionalConfig, FinegrainedTpConfig};
pub use model::{MAX_DIMENSION, MAX_PARAMETERS, ModelConfig, VOCAB_PADDING, pad_vocab};
pub use parallel::{MAX_WORLD_SIZE, ParallelConfig};
pub use rope_scaling::RopeScaling;
