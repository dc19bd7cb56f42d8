//! Configuration: the vLLM-Ascend flags, `finegrained_tp_config`, and the model's shapes.
//! Everything is validated here, up front, with typed errors.

mod component;
mod error;
mod finegrained;
mod model;
mod parallel;

pub use component::Component;
pub use error::{ConfigError, ModelConfigError};
pub use finegrained::{AdditionalConfig, FinegrainedTpConfig};
pub use model::{Architecture, MlaConfig, ModelConfig, MoeConfig, VOCAB_PADDING, pad_vocab};
pub use parallel::ParallelConfig;
