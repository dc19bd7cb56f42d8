//! # finetp-server
//!
//! An OpenAI-compatible HTTP server over the engine's [`Hub`]: `/v1/completions`,
//! `/v1/chat/completions` (the model's own chat template), streaming by server-sent events,
//! `logprobs` / `top_logprobs`, `echo` with prompt log-probabilities (under every lm_head
//! size), `stop`, `n`, `seed`, penalties; `/v1/models`, `/health`, `/metrics`. The ranks run
//! elsewhere ([`finetp_engine::serve`]); a handler only tokenises, submits, and turns the
//! events of its requests into responses. A client that goes away cancels its requests; a
//! full queue answers 429.

mod api;
mod endpoints;
mod error;
mod generation;
mod metrics;
mod respond;

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use finetp_engine::{Hub, RequestLimits};

pub use error::ApiError;
pub use metrics::Metrics;

/// The model a server answers for, and how its text becomes ids and back.
pub struct ServedModel {
    /// The name clients pass as `model` (`/v1/models` lists it).
    pub name: String,
    pub tokenizer: tokenizers::Tokenizer,
    pub prompt: finetp_loader::PromptFormat,
    pub eos_token_ids: Vec<u32>,
    pub limits: RequestLimits,
    /// `max_tokens` of a request that gives none (within what its context leaves).
    pub default_max_tokens: usize,
}

/// What every handler shares.
pub struct AppState {
    pub hub: Arc<Hub>,
    pub model: ServedModel,
    pub metrics: Metrics,
    next: AtomicUsize,
    seeds: RandomState,
}

impl AppState {
    pub fn new(hub: Arc<Hub>, model: ServedModel) -> Self {
        Self { hub, model, metrics: Metrics::new(), next: AtomicUsize::new(0), seeds: RandomState::new() }
    }

    /// A fresh engine request id.
    pub(crate) fn next_id(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// An id for a response (`cmpl-7`).
    pub(crate) fn response_id(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.next_id())
    }

    /// A seed for a request that gives none.
    pub(crate) fn random_seed(&self) -> u64 {
        self.seeds.hash_one(self.next_id())
    }
}

/// The server's routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/completions", post(endpoints::completions))
        .route("/v1/chat/completions", post(endpoints::chat))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::not_found("no such route; this server has /v1/completions, /v1/chat/completions, /v1/models, /health, /metrics", None) })
        .with_state(state)
}

/// 200 once every rank has loaded; 503 before, while shutting down, or after a failure.
async fn health(State(s): State<Arc<AppState>>) -> Response {
    if let Some(f) = s.hub.failure() {
        return ApiError::unavailable(format!("the engine failed: {f}")).into_response();
    }
    if s.hub.is_closed() {
        return ApiError::unavailable("shutting down").into_response();
    }
    let stats = s.hub.stats();
    let loaded = stats.ranks.iter().filter(|r| r.is_some()).count();
    if loaded < stats.ranks.len() {
        return ApiError::unavailable(format!("loading: {loaded} of {} ranks ready", stats.ranks.len())).into_response();
    }
    (StatusCode::OK, "ok").into_response()
}

async fn models(State(s): State<Arc<AppState>>) -> Response {
    axum::Json(serde_json::json!({
        "object": "list",
        "data": [{ "id": s.model.name, "object": "model", "created": respond::created(), "owned_by": "finetp", "max_model_len": s.model.limits.max_model_len }]
    }))
    .into_response()
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.metrics.render(&s.hub.stats())).into_response()
}

/// Serves `state` on `listener` until `shutdown` completes; then stops accepting, lets the
/// requests in flight finish, and returns.
///
/// # Errors
/// The listener's I/O error.
pub async fn run(listener: tokio::net::TcpListener, state: Arc<AppState>, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}
