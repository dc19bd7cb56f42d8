//! # finetp-model-deepseek
//!
//! The DeepSeek-V3 architecture: multi-head latent attention (`q_lora_rank`, `kv_lora_rank`,
//! decoupled RoPE), dense MLPs in the first `first_k_dense_replace` layers — the only layers MLP
//! fine-grained TP applies to — and mixture-of-experts layers after them.
//!
//! MoE layers here are a straightforward replicated reference (every rank holds every expert,
//! routing as V3: sigmoid scores, bias-corrected group-limited top-k), enough to run a V3
//! config end to end; expert parallelism is not part of fine-grained TP.

mod mla;
mod model;
mod moe;
mod tensors;

pub use model::{DeepseekV3, MoeExtra};
pub use tensors::tensor_shapes;
