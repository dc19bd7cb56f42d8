//! Tokenizers: `tokenizer.json` for HF directories, or one rebuilt from GGUF metadata.


use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, PreTokenizerWrapper, Tokenizer};

use crate::LoaderError;
use crate::gguf::{GgufFile, MetaValue};

/// GGUF token type of control tokens (`<|im_start|>` and the like).
const CONTROL: i64 = 3;

/// Rebuilds a GPT-2-style byte-level BPE tokenizer from `tokenizer.ggml.*` metadata: the
/// vocabulary, the merges, and the control tokens as special tokens so that chat markers encode
/// to single ids. The pre-tokenizer splits digits individually, then byte-level (as SmolLM2's).
pub fn tokenizer_from_gguf(f: &GgufFile) -> Result<Tokenizer, LoaderError> {
    let bad = |detail: String| LoaderError::Tokenizer { path: f.path.display().to_string(), detail };
    let model = f.meta_str("tokenizer.ggml.model").unwrap_or("");
    if model != "gpt2" {
        return Err(bad(format!("tokenizer.ggml.model \"{model}\" is not supported (gpt2 byte-level BPE is)")));
    }
    let strings = |key: &str| -> Result<Vec<String>, LoaderError> {
        match f.metadata.get(key) {
            Some(MetaValue::Array(a)) => a.iter().map(|v| v.as_str().map(str::to_string).ok_or_else(|| bad(format!("{key} holds a non-string")))).collect(),
            _ => Err(bad(format!("missing {key}"))),
        }
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let merges: Vec<(String, String)> = strings("tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| m.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())).ok_or_else(|| bad(format!("merge \"{m}\" is not two tokens"))))
        .collect::<Result<_, _>>()?;
    let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(|e| bad(format!("BPE: {e}")))?;
    let mut tok = Tokenizer::new(bpe);
    let pre = Sequence::new(vec![PreTokenizerWrapper::Digits(Digits::new(true)), PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true))]);
    tok.with_pre_tokenizer(Some(pre));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    if let Some(MetaValue::Array(types)) = f.metadata.get("tokenizer.ggml.token_type") {
        let special: Vec<AddedToken> = types
            .iter()
            .zip(&tokens)
            .filter(|(t, _)| matches!(t, MetaValue::Int(CONTROL)))
            .map(|(_, s)| AddedToken::from(s.clone(), true))
            .collect();
        tok.add_special_tokens(special).map_err(|e| bad(format!("special tokens: {e}")))?;
    }
    Ok(tok)
}

/// Loads `tokenizer.json`.
pub fn tokenizer_from_file(path: &std::path::Path) -> Result<Tokenizer, LoaderError> {
    Tokenizer::from_file(path).map_err(|e| LoaderError::Tokenizer { path: path.display().to_string(), detail: e.to_string() })
}
