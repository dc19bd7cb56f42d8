//! Opening a checkpoint of either format.

use std::path::Path;
use std::sync::Arc;

use finetp_core::config::ModelConfig;
use finetp_core::shard::WeightSource;
use tokenizers::Tokenizer;

use crate::gguf::GgufWeights;
use crate::tokenizer::{tokenizer_from_file, tokenizer_from_gguf};
use crate::{LoaderError, SafetensorsDir};

/// A model's config, weights, tokenizer and special ids.
pub struct Checkpoint {
    pub config: ModelConfig,
    pub weights: Arc<dyn WeightSource + Send + Sync>,
    pub tokenizer: Option<Tokenizer>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub chat_template: Option<String>,
    /// For messages: the format and path.
    pub description: String,
}

impl Checkpoint {
    /// Opens an HF directory or a `.gguf` file. Nothing but headers is read here.
    pub fn open(path: &Path) -> Result<Self, LoaderError> {
        if path.is_dir() {
            Self::open_hf(path)
        } else if path.extension().is_some_and(|e| e == "gguf") {
            Self::open_gguf(path)
        } else if path.exists() {
            Err(LoaderError::Io { path: path.display().to_string(), message: "not a model directory or a .gguf file".into() })
        } else {
            Err(LoaderError::Io { path: path.display().to_string(), message: "no such file or directory".into() })
        }
    }

    fn open_gguf(path: &Path) -> Result<Self, LoaderError> {
        let (weights, config) = GgufWeights::open(path)?;
        let f = weights.file();
        let id = |k: &str| f.meta_u64(k).and_then(|v| u32::try_from(v).ok());
        let tokenizer = Some(tokenizer_from_gguf(f)?);
        Ok(Self {
            bos_token_id: id("tokenizer.ggml.bos_token_id"),
            eos_token_ids: id("tokenizer.ggml.eos_token_id").into_iter().collect(),
            chat_template: f.meta_str("tokenizer.chat_template").map(str::to_string),
            description: format!("{} (GGUF)", f.meta_str("general.name").unwrap_or("model")),
            tokenizer,
            config,
            weights: Arc::new(weights),
        })
    }

    fn open_hf(dir: &Path) -> Result<Self, LoaderError> {
        let config = ModelConfig::from_path(dir)?;
        let raw: serde_json::Value = std::fs::read_to_string(dir.join("config.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let ids = |v: &serde_json::Value| -> Vec<u32> {
            match v {
                serde_json::Value::Array(a) => a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32).collect(),
                v => v.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
            }
        };
        let tok_path = dir.join("tokenizer.json");
        let tokenizer = if tok_path.is_file() { Some(tokenizer_from_file(&tok_path)?) } else { None };
        let template = std::fs::read_to_string(dir.join("tokenizer_config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v.get("chat_template").and_then(|c| c.as_str()).map(str::to_string));
        Ok(Self {
            bos_token_id: ids(&raw["bos_token_id"]).first().copied(),
            eos_token_ids: ids(&raw["eos_token_id"]),
            chat_template: template,
            description: format!("{} (safetensors)", dir.display()),
            tokenizer,
            config,
            weights: Arc::new(SafetensorsDir::open(dir)?),
        })
    }
}
