//! Opening a checkpoint of either format.

use std::path::Path;
use std::sync::Arc;

use finetp_core::config::ModelConfig;
use finetp_core::shard::WeightSource;
use tokenizers::Tokenizer;

use crate::chat::PromptFormat;
use crate::gguf::{GgufWeights, MetaValue};
use crate::tokenizer::{tokenizer_from_file, tokenizer_from_gguf};
use crate::{Fp8BlockScale, LoaderError, SafetensorsDir};

/// A model's config, weights, tokenizer and special ids.
pub struct Checkpoint {
    pub config: ModelConfig,
    pub weights: Arc<dyn WeightSource + Send + Sync>,
    pub tokenizer: Option<Tokenizer>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub chat_template: Option<String>,
    /// How text becomes prompt ids: BOS, the chat template and its special tokens.
    pub prompt: PromptFormat,
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
        let token_text = |id: Option<u32>| match (f.metadata.get("tokenizer.ggml.tokens"), id) {
            (Some(MetaValue::Array(t)), Some(i)) => t.get(i as usize).and_then(MetaValue::as_str).map(str::to_string),
            _ => None,
        };
        let (bos, eos) = (id("tokenizer.ggml.bos_token_id"), id("tokenizer.ggml.eos_token_id"));
        // llama.cpp's rule: the key when present, else BOS for SentencePiece vocabularies only.
        let add_bos_token = match f.metadata.get("tokenizer.ggml.add_bos_token") {
            Some(MetaValue::Bool(b)) => *b,
            _ => f.meta_str("tokenizer.ggml.model") == Some("llama"),
        };
        let chat_template = f.meta_str("tokenizer.chat_template").map(str::to_string);
        let mut eos_token_ids: Vec<u32> = eos.into_iter().chain(id("tokenizer.ggml.eot_token_id")).collect();
        eos_token_ids.dedup();
        Ok(Self {
            bos_token_id: bos,
            eos_token_ids,
            prompt: PromptFormat {
                add_bos_token,
                tokenizer_adds_specials: false,
                bos_token_id: bos,
                bos_token: token_text(bos),
                eos_token: token_text(eos),
                chat_template: chat_template.clone(),
            },
            chat_template,
            description: format!("{} (GGUF)", f.meta_str("general.name").unwrap_or("model")),
            tokenizer,
            config,
            weights: Arc::new(weights),
        })
    }

    fn open_hf(dir: &Path) -> Result<Self, LoaderError> {
        let config = ModelConfig::from_path(dir).map_err(|e| LoaderError::config(dir.join("config.json").display().to_string(), e))?;
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
        let fp8 = Fp8BlockScale::from_config(&raw, &dir.join("config.json").display().to_string())?;
        let tok_path = dir.join("tokenizer.json");
        let tokenizer = if tok_path.is_file() { Some(tokenizer_from_file(&tok_path)?) } else { None };
        let json = |name: &str| -> serde_json::Value {
            std::fs::read_to_string(dir.join(name)).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
        };
        let tok_cfg = json("tokenizer_config.json");
        let template = tok_cfg.get("chat_template").and_then(|c| c.as_str()).map(str::to_string);
        // A special token's text: a string, or `{"content": …}` (an AddedToken).
        let special = |key: &str| tok_cfg.get(key).and_then(|v| v.as_str().or_else(|| v.get("content").and_then(|c| c.as_str()))).map(str::to_string);
        let bos = ids(&raw["bos_token_id"]).first().copied();
        // Generation stops on every EOS the model declares: config.json and generation_config.json.
        let mut eos_token_ids = ids(&raw["eos_token_id"]);
        for id in ids(&json("generation_config.json")["eos_token_id"]) {
            if !eos_token_ids.contains(&id) {
                eos_token_ids.push(id);
            }
        }
        Ok(Self {
            bos_token_id: bos,
            eos_token_ids,
            prompt: PromptFormat {
                add_bos_token: tok_cfg.get("add_bos_token").and_then(serde_json::Value::as_bool).unwrap_or(false),
                // tokenizer.json's post-processor adds the specials the model wants.
                tokenizer_adds_specials: true,
                bos_token_id: bos,
                bos_token: special("bos_token"),
                eos_token: special("eos_token"),
                chat_template: template.clone(),
            },
            chat_template: template,
            description: format!("{} (safetensors)", dir.display()),
            tokenizer,
            config,
            weights: Arc::new(SafetensorsDir::open(dir)?.with_fp8_blocks(fp8)),
        })
    }
}
