//! Tokenizers: `tokenizer.json` for HF directories, or one rebuilt from GGUF metadata
//! (`tokenizer.ggml.model` "gpt2": byte-level BPE; "llama": SentencePiece BPE).

mod spm;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, PreTokenizerWrapper, Tokenizer};

use crate::LoaderError;
use crate::gguf::{GgufFile, MetaValue};

/// GGUF token type of control tokens (`<|im_start|>`, `<s>` and the like).
const CONTROL: i64 = 3;
/// GGUF token type of ordinary pieces.
const NORMAL: i64 = 1;

/// Rebuilds the tokenizer a GGUF file describes in its `tokenizer.ggml.*` metadata.
///
/// # Errors
/// A `tokenizer.ggml.model` other than "gpt2" and "llama", or metadata missing or malformed.
pub fn tokenizer_from_gguf(f: &GgufFile) -> Result<Tokenizer, LoaderError> {
    let meta = GgufVocab { f };
    let tokens = meta.strings("tokenizer.ggml.tokens")?;
    let types = meta.token_types(tokens.len())?;
    let mut tok = match f.meta_str("tokenizer.ggml.model").unwrap_or("") {
        "gpt2" => byte_level_bpe(&meta, &tokens)?,
        "llama" => spm::sentencepiece_bpe(&meta, &tokens, &types)?,
        other => return Err(meta.bad(format!("tokenizer.ggml.model \"{other}\" is not supported (gpt2 byte-level BPE and llama SentencePiece are)"))),
    };
    // Control tokens are specials, so chat markers in a template encode to single ids.
    let special: Vec<AddedToken> = types.iter().zip(&tokens).filter(|(t, _)| **t == CONTROL).map(|(_, s)| AddedToken::from(s.clone(), true)).collect();
    tok.add_special_tokens(special).map_err(|e| meta.bad(format!("special tokens: {e}")))?;
    Ok(tok)
}

/// Typed access to a GGUF file's vocabulary metadata.
struct GgufVocab<'a> {
    f: &'a GgufFile,
}

impl GgufVocab<'_> {
    fn bad(&self, detail: String) -> LoaderError {
        LoaderError::Tokenizer { path: self.f.path.display().to_string(), detail }
    }

    fn array(&self, key: &str) -> Result<&[MetaValue], LoaderError> {
        match self.f.metadata.get(key) {
            Some(MetaValue::Array(a)) => Ok(a),
            _ => Err(self.bad(format!("missing {key}"))),
        }
    }

    fn strings(&self, key: &str) -> Result<Vec<String>, LoaderError> {
        self.array(key)?.iter().map(|v| v.as_str().map(str::to_string).ok_or_else(|| self.bad(format!("{key} holds a non-string")))).collect()
    }

    /// `tokenizer.ggml.token_type` (every token normal when absent), one per token.
    fn token_types(&self, n: usize) -> Result<Vec<i64>, LoaderError> {
        if !self.f.metadata.contains_key("tokenizer.ggml.token_type") {
            return Ok(vec![NORMAL; n]);
        }
        let types = self.array("tokenizer.ggml.token_type")?;
        if types.len() != n {
            return Err(self.bad(format!("tokenizer.ggml.token_type has {} entries for {n} tokens", types.len())));
        }
        types.iter().map(|v| if let MetaValue::Int(t) = v { Ok(*t) } else { Err(self.bad("tokenizer.ggml.token_type holds a non-integer".into())) }).collect()
    }
}

/// A GPT-2-style byte-level BPE tokenizer: the vocabulary and the merges. The pre-tokenizer
/// splits digits individually, then byte-level (as SmolLM2's).
fn byte_level_bpe(meta: &GgufVocab, tokens: &[String]) -> Result<Tokenizer, LoaderError> {
    let merges: Vec<(String, String)> = meta
        .strings("tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| m.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())).ok_or_else(|| meta.bad(format!("merge \"{m}\" is not two tokens"))))
        .collect::<Result<_, _>>()?;
    let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(|e| meta.bad(format!("BPE: {e}")))?;
    let mut tok = Tokenizer::new(bpe);
    let pre = Sequence::new(vec![PreTokenizerWrapper::Digits(Digits::new(true)), PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true))]);
    tok.with_pre_tokenizer(Some(pre));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    Ok(tok)
}

/// Loads `tokenizer.json`.
pub fn tokenizer_from_file(path: &std::path::Path) -> Result<Tokenizer, LoaderError> {
    Tokenizer::from_file(path).map_err(|e| LoaderError::Tokenizer { path: path.display().to_string(), detail: e.to_string() })
}
