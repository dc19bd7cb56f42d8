//! Requests, what they ask for beyond tokens (log-probabilities, penalties), and what the
//! engine reports back while it serves them.

use std::sync::Arc;

use crate::Sampling;

/// One generation request.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Unique among the requests being served at once.
    pub id: usize,
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub sampling: Sampling,
    /// Generation stops after any of these ids (it is kept in the output).
    pub stop_ids: Vec<u32>,
    /// Log-probability of every generated token, with this many most likely alternatives
    /// (OpenAI's `logprobs` / `top_logprobs`); `None`: none.
    pub logprobs: Option<usize>,
    /// Log-probability of every prompt token after the first, with this many alternatives
    /// (vLLM's `prompt_logprobs`, OpenAI's `echo` with `logprobs`).
    pub prompt_logprobs: Option<usize>,
    pub penalties: Penalties,
    /// Which stream of the sampler's generator this request draws from (`None`: its id), so a
    /// server can give the same `seed` the same draws whatever id the request gets.
    pub sample_stream: Option<u64>,
}

/// OpenAI's repetition penalties, applied to the full-vocabulary logits of each generated
/// token (so they are exact under lm_head TP, where each rank computes a slice of the
/// vocabulary): `logit[t] -= frequency · count(t) + presence · [count(t) > 0]`, counting the
/// tokens generated so far (as vLLM does, not the prompt's).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Penalties {
    pub frequency: f32,
    pub presence: f32,
}

impl Penalties {
    pub fn is_none(&self) -> bool {
        self.frequency == 0.0 && self.presence == 0.0
    }
}

impl Request {
    /// Whether serving this request needs the logits on the host (log-probabilities or
    /// penalties), which a captured decode graph does not give back.
    pub fn needs_host_logits(&self) -> bool {
        self.logprobs.is_some() || self.prompt_logprobs.is_some() || !self.penalties.is_none()
    }
}

/// What one request produced.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RequestOutput {
    pub id: usize,
    /// The DP replica that served it (its DP rank).
    pub rank: usize,
    pub tokens: Vec<u32>,
    /// Seconds from the start of generation to its first token.
    pub ttft_s: f64,
}

/// A token's log-probability under the model's raw logits (before temperature and penalties,
/// as vLLM reports them), and the most likely tokens at its position.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TokenLogprob {
    pub token: u32,
    pub logprob: f32,
    /// `(token, logprob)`, most likely first (ties: lower id first).
    pub top: Vec<(u32, f32)>,
}

/// Why a request stopped.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum FinishReason {
    /// `max_tokens` reached.
    Length,
    /// A stop token was generated.
    Stop,
    /// Cancelled by its client ([`Hub::cancel`](crate::Hub::cancel)).
    Cancelled,
    /// The engine could not serve it.
    Failed(String),
}

/// What the engine reports about a request while serving it, in order: `PromptLogprobs` (if
/// asked) once the prompt is prefilled, a `Token` per generated token, then `Finished`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Prompt tokens' log-probabilities, one per prompt token (`None` for the first).
    PromptLogprobs(Vec<Option<TokenLogprob>>),
    Token { token: u32, logprob: Option<TokenLogprob> },
    Finished { reason: FinishReason, replica: usize, prompt_tokens: usize, completion_tokens: usize },
}

/// Where a request's events go (a server's per-request channel). Called from a rank's thread
/// between steps, so it must not block.
pub trait EventSink: Send + Sync {
    fn send(&self, event: Event);
}

/// A sink that drops every event (batch runs read the ranks' results instead).
pub(crate) struct Discard;

impl EventSink for Discard {
    fn send(&self, _: Event) {}
}

pub type Sink = Arc<dyn EventSink>;
