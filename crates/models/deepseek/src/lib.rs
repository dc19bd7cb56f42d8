//! # finetp-model-deepseek
//!
//! The DeepSeek-V2/V3 architecture: multi-head latent attention (`q_lora_rank`, `kv_lora_rank`,
//! decoupled RoPE), dense MLPs in the first `first_k_dense_replace` layers — the only layers MLP
//! fine-grained TP applies to — and mixture-of-experts layers after them.
//!
//! MoE layers here are a straightforward reference (every rank holds every expert, its
//! intermediate split by standard TP; no expert parallelism yet),
//! routed as the checkpoint's config says (V2: softmax scores, greedy or group-limited greedy
//! top-k; V3: sigmoid scores, bias-corrected group-limited top-k), enough to run either end to
//! end; expert parallelism is not part of fine-grained TP.

mod mla;
mod model;
mod moe;
mod tensors;

pub use model::Deepseek;
pub use tensors::tensor_shapes;
