//! The request bodies of the OpenAI API that finetp serves, and their checks. Bodies are
//! parsed here rather than by an extractor, so that malformed JSON and fields of the wrong
//! type get OpenAI-style 400s naming the problem.

use serde::Deserialize;

use crate::error::ApiError;

/// A prompt: text, one text in a list, or token ids.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Ids(Vec<u32>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// Fields completions and chat share.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Common {
    pub model: Option<String>,
    pub max_tokens: Option<u64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    /// vLLM's extension; `-1` or `0`: no limit.
    pub top_k: Option<i64>,
    pub n: Option<u64>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub stop: Option<Stop>,
    pub seed: Option<u64>,
    pub frequency_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    pub prompt: Prompt,
    pub logprobs: Option<u64>,
    pub echo: Option<bool>,
    #[serde(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: Option<Content>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    pub max_completion_tokens: Option<u64>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<u64>,
    #[serde(flatten)]
    pub common: Common,
}

/// Parses a JSON body into `T`, or a 400 naming what is wrong.
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::invalid("the request body is empty; send a JSON object", None));
    }
    serde_json::from_slice(body).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => "the request body is not valid JSON",
            _ => "the request body does not match the API",
        };
        ApiError::invalid(format!("{what}: {e}"), None)
    })
}

/// Log-probabilities asked for: at most this many alternatives (vLLM's limit).
pub const MAX_LOGPROBS: u64 = 20;
/// Choices per request, at most.
pub const MAX_N: u64 = 16;

/// What every request's sampling fields must be.
pub struct Checked {
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: u32,
    pub n: usize,
    pub stop: Vec<String>,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
}

impl Common {
    /// The sampling fields, in range, with OpenAI's defaults.
    pub fn check(&self) -> Result<Checked, ApiError> {
        let range = |name: &'static str, v: Option<f32>, default: f32, lo: f32, hi: f32| -> Result<f32, ApiError> {
            let x = v.unwrap_or(default);
            if x.is_finite() && (lo..=hi).contains(&x) {
                Ok(x)
            } else {
                Err(ApiError::invalid(format!("{name} = {x} is out of range: it must be in [{lo}, {hi}]"), Some(name)))
            }
        };
        let temperature = range("temperature", self.temperature, 1.0, 0.0, 2.0)?;
        let top_p = range("top_p", self.top_p, 1.0, 0.0, 1.0)?;
        if top_p == 0.0 {
            return Err(ApiError::invalid("top_p = 0 is out of range: it must be in (0, 1]", Some("top_p")));
        }
        let top_k = match self.top_k {
            None | Some(-1) | Some(0) => 0,
            Some(k) if k > 0 && k <= u32::MAX as i64 => k as u32,
            Some(k) => return Err(ApiError::invalid(format!("top_k = {k} is out of range: -1 (no limit) or a positive count"), Some("top_k"))),
        };
        let n = self.n.unwrap_or(1);
        if !(1..=MAX_N).contains(&n) {
            return Err(ApiError::invalid(format!("n = {n} is out of range: it must be in [1, {MAX_N}]"), Some("n")));
        }
        let stop = match &self.stop {
            None => vec![],
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        if stop.iter().any(String::is_empty) {
            return Err(ApiError::invalid("stop strings must not be empty", Some("stop")));
        }
        Ok(Checked {
            temperature,
            top_p,
            top_k,
            n: n as usize,
            stop,
            frequency_penalty: range("frequency_penalty", self.frequency_penalty, 0.0, -2.0, 2.0)?,
            presence_penalty: range("presence_penalty", self.presence_penalty, 0.0, -2.0, 2.0)?,
        })
    }
}

/// A log-probability count in range.
pub fn check_logprobs(name: &'static str, v: Option<u64>) -> Result<Option<usize>, ApiError> {
    match v {
        Some(k) if k > MAX_LOGPROBS => Err(ApiError::invalid(format!("{name} = {k} is out of range: at most {MAX_LOGPROBS}"), Some(name))),
        other => Ok(other.map(|k| k as usize)),
    }
}

impl ChatMessage {
    /// The message's text (text parts joined).
    pub fn text(&self) -> Result<String, ApiError> {
        match &self.content {
            None => Ok(String::new()),
            Some(Content::Text(t)) => Ok(t.clone()),
            Some(Content::Parts(parts)) => parts
                .iter()
                .map(|p| match (p.kind.as_str(), &p.text) {
                    ("text", Some(t)) => Ok(t.as_str()),
                    (k, _) => Err(ApiError::invalid(format!("content parts of type {k:?} are not supported (text only)"), Some("messages"))),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|v| v.concat()),
        }
    }
}
