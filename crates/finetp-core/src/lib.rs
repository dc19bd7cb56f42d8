//! # finetp-core
//!
//! Fine-grained tensor parallelism for LLM inference: separate tensor-parallel sizes for the
//! embedding, lm_head, attention o_proj and MLP, each sharded over a group of ranks inside the
//! data-parallel world.
//!
//! Data flows one way: [`config`] (the vLLM-Ascend flags and `finegrained_tp_config`, validated
//! up front) → [`plan`] (which global ranks form each component's groups) → loading shards →
//! sharded layers → engine → CLI. This crate holds the first two, the backend contract
//! ([`backend`]) that every accelerator implements, and the per-rank memory model ([`memory`]).
//!
//! Glossary:
//! - **DP rank**: one data-parallel replica; it owns its requests and KV cache.
//! - **component**: one of embedding, lm_head, o_proj, MLP; each has its own TP size `P`.
//! - **group**: `P` ranks that shard one component between them (same TP/PP index, `P`
//!   consecutive DP replicas).
//! - **shard**: the slice of a weight one group member holds.

pub mod backend;
pub mod config;
pub mod decoder;
mod intern;
pub mod layers;
pub mod memory;
pub mod parallel;
pub mod plan;
pub mod shard;

pub use intern::intern;
