//! # finetp-model-deepseek
//!
//! The DeepSeek-V2/V3 architecture: multi-head latent attention (`q_lora_rank`, `kv_lora_rank`,
//! decoupled RoPE), dense MLPs in the first `first_k_dense_replace` layers — the only layers MLP
//! fine-grained TP applies to — and mixture-of-experts layers after them.
//!
//! MoE layers are a straightforward reference, routed as the checkpoint's config says (V2:
//! softmax scores, greedy or group-limited greedy top-k; V3: sigmoid scores, bias-corrected
//! group-limited top-k): without expert parallelism every rank holds every expert, its
//! intermediate split by standard TP; with `--enable-expert-parallel` (TP 1) the routed experts
//! are sharded over the DP world and tokens dispatched to them by all-to-all (`dispatch.rs`).
//! Routing and dispatch read the chosen experts on the host, so MoE steps run eagerly.

mod dispatch;
mod expert;
mod mla;
mod model;
mod moe;
mod tensors;

pub use model::Deepseek;
pub use tensors::tensor_shapes;
