//! Requests checked against the model before anything runs: each failure a typed error naming
//! the value, the limit and where the limit came from. `finetp run` maps them to exit code 2;
//! `finetp serve` answers them with HTTP 400 and an OpenAI error body.

use crate::Request;

/// What a request must fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Prompt tokens + new tokens, at most.
    pub max_model_len: usize,
    /// Where `max_model_len` came from, for messages (`"max_position_embeddings"` of the
    /// model config, or `"--max-model-len"`).
    pub max_model_len_from: &'static str,
    /// Token ids must be below this.
    pub vocab_size: usize,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    #[error("request {id}: the prompt is empty")]
    EmptyPrompt { id: usize },

    #[error(
        "request {id}: {prompt} prompt tokens + max_tokens {max_tokens} = {} exceed the maximum model length {limit} ({from})",
        prompt.saturating_add(*max_tokens)
    )]
    TooLong { id: usize, prompt: usize, max_tokens: usize, limit: usize, from: &'static str },

    #[error("request {id}: prompt token {position} is id {token}, outside the vocabulary of {vocab}")]
    TokenOutOfVocab { id: usize, position: usize, token: u32, vocab: usize },

    #[error("request {id}: {field} = {value} is out of range: {rule}")]
    Sampling { id: usize, field: &'static str, value: String, rule: &'static str },
}

/// Checks every request; the first failure is returned.
///
/// # Errors
/// A [`RequestError`] naming the request, the value and the rule.
pub fn validate(requests: &[Request], limits: &RequestLimits) -> Result<(), RequestError> {
    requests.iter().try_for_each(|r| validate_one(r, limits))
}

fn validate_one(r: &Request, l: &RequestLimits) -> Result<(), RequestError> {
    let id = r.id;
    if r.prompt.is_empty() {
        return Err(RequestError::EmptyPrompt { id });
    }
    if r.prompt.len().checked_add(r.max_tokens).is_none_or(|n| n > l.max_model_len) {
        return Err(RequestError::TooLong { id, prompt: r.prompt.len(), max_tokens: r.max_tokens, limit: l.max_model_len, from: l.max_model_len_from });
    }
    if let Some((position, &token)) = r.prompt.iter().enumerate().find(|(_, t)| **t as usize >= l.vocab_size) {
        return Err(RequestError::TokenOutOfVocab { id, position, token, vocab: l.vocab_size });
    }
    let s = &r.sampling;
    let bad = |field, value: f32, rule| Err(RequestError::Sampling { id, field, value: value.to_string(), rule });
    if !s.temperature.is_finite() || s.temperature < 0.0 {
        return bad("temperature", s.temperature, "a finite number >= 0 (0 is greedy)");
    }
    if !(s.top_p > 0.0 && s.top_p <= 1.0) {
        return bad("top_p", s.top_p, "a number in (0, 1]");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Sampling;

    const LIMITS: RequestLimits = RequestLimits { max_model_len: 16, max_model_len_from: "max_position_embeddings", vocab_size: 100 };

    fn req(prompt: Vec<u32>, max_tokens: usize, sampling: Sampling) -> Request {
        Request { id: 3, prompt, max_tokens, sampling, ..Request::default() }
    }

    #[test]
    fn each_rule_names_value_and_limit() {
        let ok = Sampling::default();
        assert!(validate(&[req(vec![1, 2], 14, ok)], &LIMITS).is_ok());
        let e = validate(&[req(vec![1, 2], 15, ok)], &LIMITS).unwrap_err();
        assert_eq!(e.to_string(), "request 3: 2 prompt tokens + max_tokens 15 = 17 exceed the maximum model length 16 (max_position_embeddings)");
        assert!(matches!(validate(&[req(vec![1], usize::MAX, ok)], &LIMITS), Err(RequestError::TooLong { .. })), "no overflow");
        assert_eq!(validate(&[req(vec![], 1, ok)], &LIMITS), Err(RequestError::EmptyPrompt { id: 3 }));
        let e = validate(&[req(vec![5, 100], 1, ok)], &LIMITS).unwrap_err();
        assert_eq!(e, RequestError::TokenOutOfVocab { id: 3, position: 1, token: 100, vocab: 100 });
        for (t, p) in [(f32::NAN, 1.0), (f32::INFINITY, 1.0), (-0.5, 1.0), (1.0, 0.0), (1.0, 2.0), (1.0, f32::NAN)] {
            let s = Sampling { temperature: t, top_p: p, ..ok };
            assert!(matches!(validate(&[req(vec![1], 1, s)], &LIMITS), Err(RequestError::Sampling { .. })), "temperature {t}, top_p {p}");
        }
    }
}
