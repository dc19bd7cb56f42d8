//! `/v1/completions` and `/v1/chat/completions`: a body checked and tokenised, its choices
//! submitted, and the answer in each endpoint's shape.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use finetp_engine::{Penalties, Request, Sampling, TokenLogprob};
use serde_json::{Value, json};

use crate::AppState;
use crate::api::{self, ChatRequest, Common, CompletionRequest, Prompt};
use crate::error::ApiError;
use crate::generation::{Choice, submit, token_text};
use crate::respond::{self, Head, Shape, created};

/// What both endpoints do once the prompt is tokenised.
struct Job {
    prompt: Vec<u32>,
    max_tokens: usize,
    logprobs: Option<usize>,
    prompt_logprobs: Option<usize>,
}

/// Checks the common fields, submits the choices and answers: a stream, or the whole response
/// awaited here, inside the handler (a client that goes away drops it, which cancels its
/// engine requests).
async fn run(state: Arc<AppState>, common: &Common, job: Job, shape: impl Shape) -> Result<Response, ApiError> {
    let model = &state.model;
    if let Some(m) = &common.model
        && m != &model.name
    {
        return Err(ApiError::not_found(format!("the model `{m}` does not exist; this server serves `{}`", model.name), Some("model")));
    }
    let c = common.check()?;
    // A seed makes the draws repeat: choice i always draws from stream i of that seed.
    let seed = common.seed.unwrap_or_else(|| state.random_seed());
    let make = |index: usize, id: usize| Request {
        id,
        prompt: job.prompt.clone(),
        max_tokens: job.max_tokens,
        sampling: Sampling { temperature: c.temperature, top_p: c.top_p, top_k: c.top_k, seed },
        stop_ids: model.eos_token_ids.clone(),
        logprobs: job.logprobs,
        prompt_logprobs: job.prompt_logprobs,
        penalties: Penalties { frequency: c.frequency_penalty, presence: c.presence_penalty },
        sample_stream: Some(index as u64),
    };
    finetp_engine::validate(&[make(0, 0)], &model.limits).map_err(|e| {
        let msg = e.to_string();
        let msg = msg.strip_prefix("request 0: ").unwrap_or(&msg).to_string();
        ApiError::invalid(msg, None)
    })?;
    let sub = submit(&state, c.n, make)?;
    Ok(if common.stream.unwrap_or(false) {
        let usage = common.stream_options.is_some_and(|o| o.include_usage);
        respond::stream(state, sub, c.n, job.prompt.len(), c.stop, usage, shape)
    } else {
        respond::whole(state, sub, c.n, job.prompt.len(), c.stop, shape).await
    })
}

/// A response's id (`cmpl-7`), the model's name and the time.
fn head(state: &AppState, prefix: &str) -> Head {
    Head { id: state.response_id(prefix), model: state.model.name.clone(), created: created() }
}

fn max_tokens(state: &AppState, v: Option<u64>, prompt: usize) -> usize {
    match v {
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        // The server's default, within what the context leaves.
        None => state.model.default_max_tokens.min(state.model.limits.max_model_len.saturating_sub(prompt)),
    }
}

pub async fn completions(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    completions_inner(state, body).await.unwrap_or_else(IntoResponse::into_response)
}

async fn completions_inner(state: Arc<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let req: CompletionRequest = api::parse(&body)?;
    let model = &state.model;
    let prompt = match &req.prompt {
        Prompt::Text(t) => model.prompt.encode_raw(&model.tokenizer, t),
        Prompt::Texts(v) if v.len() == 1 => model.prompt.encode_raw(&model.tokenizer, &v[0]),
        Prompt::Texts(v) => return Err(ApiError::invalid(format!("a list of {} prompts: send one prompt per request", v.len()), Some("prompt"))),
        Prompt::Ids(ids) => Ok(ids.clone()),
    }
    .map_err(|e| ApiError::invalid(format!("cannot tokenise the prompt: {e}"), Some("prompt")))?;
    let logprobs = api::check_logprobs("logprobs", req.logprobs)?;
    let echo = req.echo.unwrap_or(false);
    let job = Job {
        max_tokens: max_tokens(&state, req.common.max_tokens, prompt.len()),
        logprobs,
        prompt_logprobs: if echo { logprobs } else { None },
        prompt,
    };
    let echo_text = if echo { model.tokenizer.decode(&job.prompt, true).unwrap_or_default() } else { String::new() };
    let shape = Completion { head: head(&state, "cmpl"), state: state.clone(), echo: echo.then_some(echo_text), prompt: job.prompt.clone(), logprobs };
    run(state.clone(), &req.common, job, shape).await
}

pub async fn chat(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    chat_inner(state, body).await.unwrap_or_else(IntoResponse::into_response)
}

async fn chat_inner(state: Arc<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let req: ChatRequest = api::parse(&body)?;
    let model = &state.model;
    if req.messages.is_empty() {
        return Err(ApiError::invalid("messages must hold at least one message", Some("messages")));
    }
    if model.prompt.chat_template.is_none() {
        return Err(ApiError::invalid(format!("the model `{}` has no chat template; use /v1/completions", model.name), None));
    }
    let messages = req
        .messages
        .iter()
        .map(|m| match m.role.as_str() {
            "system" | "user" | "assistant" | "developer" => Ok(finetp_loader::Message { role: if m.role == "developer" { "system".into() } else { m.role.clone() }, content: m.text()? }),
            other => Err(ApiError::invalid(format!("message role {other:?} is not one of system, user, assistant"), Some("messages"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let prompt = model.prompt.encode_chat(&model.tokenizer, &messages).map_err(|e| ApiError::invalid(format!("cannot apply the chat template: {e}"), Some("messages")))?;
    let logprobs = if req.logprobs.unwrap_or(false) {
        Some(api::check_logprobs("top_logprobs", req.top_logprobs)?.unwrap_or(0))
    } else if req.top_logprobs.is_some() {
        return Err(ApiError::invalid("top_logprobs needs logprobs: true", Some("top_logprobs")));
    } else {
        None
    };
    let job = Job { max_tokens: max_tokens(&state, req.max_completion_tokens.or(req.common.max_tokens), prompt.len()), logprobs, prompt_logprobs: None, prompt };
    let shape = Chat { head: head(&state, "chatcmpl"), state: state.clone(), logprobs: logprobs.is_some() };
    run(state.clone(), &req.common, job, shape).await
}

struct Completion {
    head: Head,
    state: Arc<AppState>,
    echo: Option<String>,
    prompt: Vec<u32>,
    logprobs: Option<usize>,
}

impl Completion {
    /// OpenAI's completion log-probabilities of `entries` (prompt entries first when echoing).
    fn logprobs_json(&self, entries: &[Option<&TokenLogprob>], ids: &[u32]) -> Value {
        let tok = &self.state.model.tokenizer;
        let (mut tokens, mut lps, mut tops, mut offsets) = (vec![], vec![], vec![], vec![]);
        let mut offset = 0;
        for (e, &id) in entries.iter().zip(ids) {
            let text = token_text(tok, id);
            offsets.push(offset);
            offset += text.len();
            tokens.push(text);
            lps.push(e.map(|e| json!(e.logprob)).unwrap_or(Value::Null));
            tops.push(e.map(|e| Value::Object(e.top.iter().map(|(t, lp)| (token_text(tok, *t), json!(lp))).collect())).unwrap_or(Value::Null));
        }
        json!({ "tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets })
    }

    fn choice_logprobs(&self, c: &Choice, generated: &[TokenLogprob], with_prompt: bool) -> Value {
        if self.logprobs.is_none() {
            return Value::Null;
        }
        let mut entries: Vec<Option<&TokenLogprob>> = vec![];
        let mut ids: Vec<u32> = vec![];
        if with_prompt && self.echo.is_some() {
            let p = c.prompt_logprobs.as_deref().unwrap_or(&[]);
            for (i, &id) in self.prompt.iter().enumerate() {
                entries.push(p.get(i).and_then(Option::as_ref));
                ids.push(id);
            }
        }
        for e in generated {
            entries.push(Some(e));
            ids.push(e.token);
        }
        self.logprobs_json(&entries, &ids)
    }
}

impl Shape for Completion {
    const OBJECT: &'static str = "text_completion";
    const CHUNK_OBJECT: &'static str = "text_completion";

    fn head(&self) -> &Head {
        &self.head
    }

    fn chunk_choice(&self, index: usize, c: &Choice, delta: &str, logprobs: &[TokenLogprob], first: bool) -> Value {
        let text = match (&self.echo, first) {
            (Some(p), true) => format!("{p}{delta}"),
            _ => delta.to_string(),
        };
        json!({ "index": index, "text": text, "logprobs": self.choice_logprobs(c, logprobs, first), "finish_reason": c.finish })
    }

    fn whole_choice(&self, index: usize, c: &Choice) -> Value {
        let text = format!("{}{}", self.echo.as_deref().unwrap_or(""), c.text());
        json!({ "index": index, "text": text, "logprobs": self.choice_logprobs(c, &c.logprobs, true), "finish_reason": c.finish })
    }
}

struct Chat {
    head: Head,
    state: Arc<AppState>,
    logprobs: bool,
}

impl Chat {
    fn logprobs_json(&self, entries: &[TokenLogprob]) -> Value {
        if !self.logprobs {
            return Value::Null;
        }
        let tok = &self.state.model.tokenizer;
        let one = |id: u32, lp: f32| {
            let t = token_text(tok, id);
            json!({ "token": t, "logprob": lp, "bytes": t.as_bytes() })
        };
        let content: Vec<Value> = entries
            .iter()
            .map(|e| {
                let mut v = one(e.token, e.logprob);
                v["top_logprobs"] = Value::Array(e.top.iter().map(|(t, lp)| one(*t, *lp)).collect());
                v
            })
            .collect();
        json!({ "content": content })
    }
}

impl Shape for Chat {
    const OBJECT: &'static str = "chat.completion";
    const CHUNK_OBJECT: &'static str = "chat.completion.chunk";

    fn head(&self) -> &Head {
        &self.head
    }

    fn chunk_choice(&self, index: usize, c: &Choice, delta: &str, logprobs: &[TokenLogprob], first: bool) -> Value {
        let mut d = json!({ "content": delta });
        if first {
            d["role"] = json!("assistant");
        }
        json!({ "index": index, "delta": d, "logprobs": self.logprobs_json(logprobs), "finish_reason": c.finish })
    }

    fn whole_choice(&self, index: usize, c: &Choice) -> Value {
        json!({
            "index": index,
            "message": { "role": "assistant", "content": c.text() },
            "logprobs": self.logprobs_json(&c.logprobs),
            "finish_reason": c.finish
        })
    }
}
