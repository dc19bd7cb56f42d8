//! Drives a request's choices to the end, as one JSON response or as a stream of
//! server-sent events; the endpoint supplies the shapes (`Shape`).

use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use finetp_engine::TokenLogprob;
use tokio::sync::mpsc;

use crate::AppState;
use crate::generation::{Choice, Submitted};

/// What every response object and chunk of one request carries.
pub struct Head {
    pub id: String,
    pub model: String,
    pub created: u64,
}

impl Head {
    /// A response object (`object`) holding `choices`, with `usage` when given.
    fn wrap(&self, object: &str, choices: Vec<serde_json::Value>, usage: Option<serde_json::Value>) -> serde_json::Value {
        let mut v = serde_json::json!({ "id": self.id, "object": object, "created": self.created, "model": self.model, "choices": choices });
        if let Some(u) = usage {
            v["usage"] = u;
        }
        v
    }
}

/// How an endpoint writes its choices; the envelope around them is the same for all.
pub trait Shape: Send + Sync + 'static {
    /// `object` of the whole response and of each streamed chunk.
    const OBJECT: &'static str;
    const CHUNK_OBJECT: &'static str;
    fn head(&self) -> &Head;
    /// Choice `index` of a streamed chunk: its new text and the log-probabilities of the
    /// tokens that brought it; `first` on the choice's first chunk.
    fn chunk_choice(&self, index: usize, choice: &Choice, delta: &str, logprobs: &[TokenLogprob], first: bool) -> serde_json::Value;
    /// Choice `index` of the whole response.
    fn whole_choice(&self, index: usize, choice: &Choice) -> serde_json::Value;
}

pub fn usage(choices: &[Choice]) -> serde_json::Value {
    let prompt = choices.first().map_or(0, |c| c.prompt_tokens);
    let completion: usize = choices.iter().map(|c| c.tokens.len()).sum();
    serde_json::json!({ "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion })
}

/// Reads events until every choice has finished; a choice that hits a stop string has its
/// engine request cancelled. `false` if the engine went away first.
async fn next(state: &AppState, sub: &mut Submitted, choices: &mut [Choice], stop: &[String]) -> Option<usize> {
    let (index, event) = sub.events.recv().await?;
    if choices[index].on_event(event, &state.model.tokenizer, stop) {
        state.hub.cancel(sub.ids[index]);
    }
    Some(index)
}

fn record(state: &AppState, sub: &Submitted, choices: &[Choice]) {
    for c in choices {
        state.metrics.finished(sub.submitted_at, c.first_token_at, c.tokens.len(), c.finish.unwrap_or("error"));
    }
}

/// The whole response once every choice is done.
pub async fn whole<S: Shape>(state: Arc<AppState>, mut sub: Submitted, n: usize, prompt_tokens: usize, stop: Vec<String>, shape: S) -> Response {
    let mut choices: Vec<Choice> = (0..n).map(|_| Choice::new(prompt_tokens)).collect();
    while choices.iter().any(|c| c.finish.is_none()) {
        if next(&state, &mut sub, &mut choices, &stop).await.is_none() {
            return crate::generation::failure(&state).into_response();
        }
    }
    record(&state, &sub, &choices);
    if choices.iter().any(|c| c.finish == Some("error")) {
        return crate::generation::failure(&state).into_response();
    }
    let u = usage(&choices);
    let all = choices.iter().enumerate().map(|(i, c)| shape.whole_choice(i, c)).collect();
    axum::Json(shape.head().wrap(S::OBJECT, all, Some(u))).into_response()
}

/// A stream of chunks, `data: [DONE]` last. The client going away ends the stream: its
/// engine requests are cancelled at once (the task below notices the closed channel).
pub fn stream<S: Shape>(state: Arc<AppState>, mut sub: Submitted, n: usize, prompt_tokens: usize, stop: Vec<String>, include_usage: bool, shape: S) -> Response {
    let (tx, rx) = mpsc::channel::<Result<SseEvent, Infallible>>(64);
    tokio::spawn(async move {
        let mut choices: Vec<Choice> = (0..n).map(|_| Choice::new(prompt_tokens)).collect();
        let mut sent_logprobs = vec![0usize; n];
        let mut started = vec![false; n];
        // A choice's last chunk (the one with its finish_reason) is sent once; events still in
        // flight for it after a stop string are dropped.
        let mut ended = vec![false; n];
        let send = |v: serde_json::Value| SseEvent::default().data(v.to_string());
        while choices.iter().any(|c| c.finish.is_none()) {
            let got = tokio::select! {
                got = next(&state, &mut sub, &mut choices, &stop) => got,
                () = tx.closed() => return, // the client left: `sub` drops and cancels
            };
            let Some(i) = got else {
                let _ = tx.send(Ok(send(crate::generation::failure(&state).body()))).await;
                return;
            };
            if ended[i] {
                continue;
            }
            let c = &mut choices[i];
            if c.finish == Some("error") {
                let _ = tx.send(Ok(send(crate::generation::failure(&state).body()))).await;
                return;
            }
            ended[i] = c.finish.is_some();
            let delta = c.take_delta(&stop);
            let lps = c.logprobs[sent_logprobs[i]..].to_vec();
            if delta.is_empty() && lps.is_empty() && c.finish.is_none() && started[i] {
                continue;
            }
            sent_logprobs[i] = c.logprobs.len();
            let chunk = shape.head().wrap(S::CHUNK_OBJECT, vec![shape.chunk_choice(i, c, &delta, &lps, !started[i])], None);
            started[i] = true;
            if tx.send(Ok(send(chunk))).await.is_err() {
                return;
            }
        }
        record(&state, &sub, &choices);
        if include_usage {
            let _ = tx.send(Ok(send(shape.head().wrap(S::CHUNK_OBJECT, vec![], Some(usage(&choices)))))).await;
        }
        let _ = tx.send(Ok(SseEvent::default().data("[DONE]"))).await;
    });
    Sse::new(tokio_stream::wrappers::ReceiverStream::new(rx)).keep_alive(KeepAlive::default()).into_response()
}

/// Seconds since the Unix epoch (`created`).
pub fn created() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

