//! Prompts as the model's tokenizer makes them: BOS only where the tokenizer asks for it, and
//! conversations through the model's own chat template, rendered with a Jinja engine as HF's
//! `apply_chat_template` renders it.

use minijinja::{Environment, ErrorKind, context};
use tokenizers::Tokenizer;

use crate::LoaderError;

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn user(content: impl Into<String>) -> Self {
        Self { role: "user".into(), content: content.into() }
    }
}

/// What a checkpoint says about turning text into prompt ids.
#[derive(Debug, Clone, Default)]
pub struct PromptFormat {
    /// Prepend BOS to raw text (GGUF `tokenizer.ggml.add_bos_token`; an HF tokenizer adds its
    /// own through its post-processor).
    pub add_bos_token: bool,
    /// Raw text gets the tokenizer's own special tokens (`tokenizer.json`'s post-processor).
    pub tokenizer_adds_specials: bool,
    pub bos_token_id: Option<u32>,
    /// The special tokens' text, for templates (`{{ bos_token }}`).
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    /// The model's chat template (Jinja).
    pub chat_template: Option<String>,
}

impl PromptFormat {
    /// The ids of raw `text`, with BOS where the tokenizer asks for it.
    ///
    /// # Errors
    /// [`LoaderError::Tokenizer`] when the tokenizer fails.
    pub fn encode_raw(&self, tok: &Tokenizer, text: &str) -> Result<Vec<u32>, LoaderError> {
        let enc = tok.encode(text, self.tokenizer_adds_specials).map_err(|e| tokenizer_error(format!("cannot tokenize the prompt: {e}")))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if self.add_bos_token && !self.tokenizer_adds_specials {
            ids.extend(self.bos_token_id);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// The conversation rendered by the chat template (with the assistant's turn opened when
    /// `add_generation_prompt`), as text.
    ///
    /// # Errors
    /// [`LoaderError::Tokenizer`] when there is no template, or it fails to render (its own
    /// `raise_exception` included).
    pub fn render_chat(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, LoaderError> {
        let template = self.chat_template.as_deref().ok_or_else(|| tokenizer_error("the model has no chat template".into()))?;
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_template("chat", template).map_err(|e| tokenizer_error(format!("the chat template does not parse: {e:#}")))?;
        let t = env.get_template("chat").map_err(|e| tokenizer_error(format!("{e:#}")))?;
        t.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_deref().unwrap_or(""),
            eos_token => self.eos_token.as_deref().unwrap_or(""),
        })
        .map_err(|e| tokenizer_error(format!("the chat template failed: {e:#}")))
    }

    /// The ids of a conversation, as `apply_chat_template(messages, add_generation_prompt=True)`
    /// gives them: the rendered text, its special tokens parsed as specials, nothing added.
    ///
    /// # Errors
    /// As [`render_chat`](Self::render_chat), and when the tokenizer fails.
    pub fn encode_chat(&self, tok: &Tokenizer, messages: &[Message]) -> Result<Vec<u32>, LoaderError> {
        let text = self.render_chat(messages, true)?;
        let enc = tok.encode(text.as_str(), false).map_err(|e| tokenizer_error(format!("cannot tokenize the conversation: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }
}

fn tokenizer_error(detail: String) -> LoaderError {
    LoaderError::Tokenizer { path: "prompt".into(), detail }
}
