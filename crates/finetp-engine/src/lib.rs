//! # finetp-engine
//!
//! Runs a model data-parallel over `DP` ranks (threads of one process, or processes under
//! `mpirun` with the `mpi` feature), each with its own
//! requests and KV cache, with fine-grained TP groups cutting across them. Every step the ranks
//! exchange their token counts on the DP group (one small all-gather, as vLLM does); every rank,
//! busy or idle, then runs the same forward, so each component's collectives stay in lock-step.
//!
//! Requests reach the ranks through a [`Hub`]: [`generate`] submits a batch known up front,
//! [`serve`] whatever a server submits while it runs; both run the same rank loop, with
//! continuous batching (requests join and leave between steps) over a paged KV cache.
//!
//! Modes: `eager` runs every step with the real, uneven token counts (variable-size
//! collectives); `graph` runs decode steps with static shapes — every rank padded to the same
//! batch-size bucket (tokens and logit rows) — each bucket captured once as a graph and
//! replayed (`graph` module). Prefill steps, and steps whose logits a request wants on the
//! host, are eager, as in vLLM's `FULL_DECODE_ONLY`.

mod agree;
pub mod bench;
mod dispatch;
mod error;
mod graph;
mod hub;
mod kv_pool;
mod launch;
mod logits;
mod rank;
mod rank_loop;
mod request;
mod sampling;
mod step;
mod validate;

pub use dispatch::{BackendKind, WithBackend, dispatch};
pub use error::EngineError;
pub use graph::GraphReport;
pub use launch::{DEFAULT_TIMEOUT, Launcher, Rank, let_the_launcher_forward_output, mpi_launched_processes};
#[cfg(feature = "mpi")]
pub use launch::mpi;
pub use hub::{Hub, HubStats, RankMemory, SubmitError};
pub use rank::{DEFAULT_MAX_NUM_BATCHED_TOKENS, EngineConfig, ExecMode, GenerationReport, RankReport, generate, serve};
pub use request::{Event, EventSink, FinishReason, Penalties, Request, RequestOutput, Sink, TokenLogprob};
pub use sampling::Sampling;
pub use validate::{RequestError, RequestLimits, validate};
