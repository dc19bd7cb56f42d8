//! # finetp-model-llama
//!
//! The Llama family — Llama 2/3, SmolLM2, and the Qwen variants (Qwen2: q/k/v bias; Qwen3:
//! per-head q/k RMSNorm) — composed from finetp's sharded layers, generic over the backend.
//! The model never sees rank arithmetic: each sharded layer owns its group and its shard.

mod layer;
mod model;
mod tensors;

pub use model::Llama;
pub use tensors::tensor_shapes;
