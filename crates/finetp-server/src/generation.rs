//! One API request's generation: its choices submitted to the hub as engine requests, their
//! events turned into text (detokenised incrementally, cut at stop strings), and every engine
//! request cancelled when the client goes away.

use std::sync::Arc;
use std::time::Instant;

use finetp_engine::{Event, EventSink, FinishReason, Request, TokenLogprob};
use tokio::sync::mpsc;

use crate::AppState;
use crate::error::ApiError;

/// An engine event of choice `.0`.
pub type Tagged = (usize, Event);

struct ChoiceSink {
    index: usize,
    tx: mpsc::UnboundedSender<Tagged>,
}

impl EventSink for ChoiceSink {
    fn send(&self, event: Event) {
        let _ = self.tx.send((self.index, event));
    }
}

/// Cancels its engine requests when dropped (the client went away, or the handler ended).
pub struct Submitted {
    state: Arc<AppState>,
    pub ids: Vec<usize>,
    pub events: mpsc::UnboundedReceiver<Tagged>,
    pub submitted_at: Instant,
}

impl Drop for Submitted {
    fn drop(&mut self) {
        for &id in &self.ids {
            self.state.hub.cancel(id);
        }
    }
}

/// Submits one engine request per choice (`make(index, id)`); if any is refused, the ones
/// already submitted are cancelled.
pub fn submit(state: &Arc<AppState>, n: usize, make: impl Fn(usize, usize) -> Request) -> Result<Submitted, ApiError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut sub = Submitted { state: state.clone(), ids: vec![], events: rx, submitted_at: Instant::now() };
    for index in 0..n {
        let id = state.next_id();
        state.hub.submit(make(index, id), Arc::new(ChoiceSink { index, tx: tx.clone() }))?;
        sub.ids.push(id);
    }
    Ok(sub)
}

/// One choice's text as it is generated.
pub struct Choice {
    pub tokens: Vec<u32>,
    pub logprobs: Vec<TokenLogprob>,
    pub prompt_logprobs: Option<Vec<Option<TokenLogprob>>>,
    /// Decoded text up to the first stop string.
    text: String,
    /// Bytes of `text` already handed out.
    sent: usize,
    pub finish: Option<&'static str>,
    pub prompt_tokens: usize,
    pub first_token_at: Option<Instant>,
}

impl Choice {
    /// A choice of a request whose prompt has `prompt_tokens` tokens.
    pub fn new(prompt_tokens: usize) -> Self {
        Self { tokens: vec![], logprobs: vec![], prompt_logprobs: None, text: String::new(), sent: 0, finish: None, prompt_tokens, first_token_at: None }
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// Takes an engine event; returns whether the choice hit a stop string (its engine request
    /// should then be cancelled).
    pub fn on_event(&mut self, e: Event, tok: &tokenizers::Tokenizer, stop: &[String]) -> bool {
        if self.finish.is_some() {
            return false;
        }
        match e {
            Event::PromptLogprobs(p) => self.prompt_logprobs = Some(p),
            Event::Token { token, logprob } => {
                self.first_token_at.get_or_insert_with(Instant::now);
                self.tokens.push(token);
                self.logprobs.extend(logprob);
                self.text = tok.decode(&self.tokens, true).unwrap_or_default();
                if let Some(at) = stop.iter().filter_map(|s| self.text.find(s.as_str())).min() {
                    self.text.truncate(at);
                    self.finish = Some("stop");
                    return true;
                }
            }
            Event::Finished { reason, .. } => {
                self.finish = Some(match reason {
                    FinishReason::Length => "length",
                    FinishReason::Stop | FinishReason::Cancelled => "stop",
                    FinishReason::Failed(_) => "error",
                });
            }
        }
        false
    }

    /// Text not yet handed out that is safe to hand out: all of it once finished; before, all
    /// but what could still be the start of a stop string or half a character.
    pub fn take_delta(&mut self, stop: &[String]) -> String {
        let mut end = self.text.len();
        if self.finish.is_none() {
            if self.text.ends_with('\u{FFFD}') {
                end = self.text.trim_end_matches('\u{FFFD}').len();
            }
            let hold = stop.iter().map(|s| s.len().saturating_sub(1)).max().unwrap_or(0);
            end = end.saturating_sub(hold);
            while !self.text.is_char_boundary(end) {
                end -= 1;
            }
        }
        // Re-decoding can rewrite the text before `sent` (a merge across tokens): what was
        // handed out stays handed out, and nothing is sliced off a character boundary.
        if end <= self.sent || !self.text.is_char_boundary(self.sent) {
            return String::new();
        }
        let d = self.text[self.sent..end].to_string();
        self.sent = end;
        d
    }
}

/// A token's text, as it appears in log-probability lists.
pub fn token_text(tok: &tokenizers::Tokenizer, id: u32) -> String {
    tok.decode(&[id], false).unwrap_or_default()
}

/// The message of a failed choice.
pub fn failure(state: &AppState) -> ApiError {
    ApiError::internal(format!("generation failed: {}", state.hub.failure().unwrap_or_else(|| "the engine stopped".into())))
}

#[cfg(test)]
mod tests {
    use super::Choice;

    #[test]
    fn text_that_could_start_a_stop_string_or_half_a_character_is_held_back() {
        let stop = vec!["STOP".to_string()];
        let mut c = Choice::new(3);
        c.text = "hello wor".into();
        assert_eq!(c.take_delta(&stop), "hello ", "the last 3 bytes could begin \"STOP\"");
        c.text = "hello world\u{FFFD}".into();
        assert_eq!(c.take_delta(&stop), "wo", "an unfinished character and the stop window wait");
        c.text = "hello world, é".into();
        assert_eq!(c.take_delta(&stop), "rld,", "never cut inside a character");
        c.finish = Some("stop");
        assert_eq!(c.take_delta(&stop), " é", "all of it once finished");
        assert_eq!(c.take_delta(&stop), "");
        // Text rewritten before what was handed out gives nothing, and no panic.
        c.finish = None;
        c.text = "é".repeat(10);
        c.sent = 3;
        assert_eq!(c.take_delta(&[]), "");
        assert_eq!(c.prompt_tokens, 3);
    }
}
