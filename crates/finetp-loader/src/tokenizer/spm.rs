//! A SentencePiece BPE vocabulary (`tokenizer.ggml.model` "llama": Llama 2, Mistral, TinyLlama,
//! and whatever llama.cpp's converter writes from a `tokenizer.model`) as a `tokenizers` BPE.
//!
//! SentencePiece stores pieces with scores, not merges: two adjacent pieces merge when their
//! concatenation is a piece, the highest-scoring such pair first (llama.cpp's SPM tokenizer does
//! exactly this). A BPE whose merge ranks follow the merged pieces' scores is the same algorithm,
//! which is how HF's `LlamaTokenizerFast` is built from a `tokenizer.model` too. Spaces become
//! `▁`, one is prepended unless `tokenizer.ggml.add_space_prefix` is false, and characters with
//! no piece fall back to `<0xXX>` byte pieces where the vocabulary has them.

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::{DecoderWrapper, NormalizerWrapper, Tokenizer};

use super::{CONTROL, GgufVocab};
use crate::LoaderError;
use crate::gguf::MetaValue;

/// GGUF token types (llama.cpp's `llama_token_type`; control and normal are in `super`).
const UNKNOWN: i64 = 2;
const UNUSED: i64 = 5;
const BYTE: i64 = 6;

/// SentencePiece's word-boundary marker, which stands for a space.
const SPACE: &str = "\u{2581}";

/// The tokenizer of `tokens` with their GGUF `types` (one each) and `tokenizer.ggml.scores`.
pub(super) fn sentencepiece_bpe(meta: &GgufVocab, tokens: &[String], types: &[i64]) -> Result<Tokenizer, LoaderError> {
    let scores: Vec<f64> = meta
        .array("tokenizer.ggml.scores")?
        .iter()
        .map(|v| v.as_f64().ok_or_else(|| meta.bad("tokenizer.ggml.scores holds a non-number".into())))
        .collect::<Result<_, _>>()?;
    if scores.len() != tokens.len() {
        return Err(meta.bad(format!("tokenizer.ggml.scores has {} entries for {} tokens", scores.len(), tokens.len())));
    }
    let mut vocab = Vocab::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        vocab.entry(t.clone()).or_insert(i as u32);
    }
    let unk = match meta.f.meta_u64("tokenizer.ggml.unknown_token_id") {
        Some(i) => Some(tokens.get(i as usize).ok_or_else(|| meta.bad(format!("tokenizer.ggml.unknown_token_id {i} is past the vocabulary")))?.clone()),
        None => types.iter().position(|&t| t == UNKNOWN).map(|i| tokens[i].clone()),
    };
    let merges = merges_by_score(tokens, types, &scores, &vocab);
    let mut builder = BPE::builder().vocab_and_merges(vocab, merges).fuse_unk(true);
    if let Some(unk) = unk {
        builder = builder.unk_token(unk);
    }
    if types.contains(&BYTE) {
        builder = builder.byte_fallback(true);
    }
    let bpe = builder.build().map_err(|e| meta.bad(format!("SentencePiece BPE: {e}")))?;
    let prefix = !matches!(meta.f.metadata.get("tokenizer.ggml.add_space_prefix"), Some(MetaValue::Bool(false)));
    let replace = |from: &str, to: &str| Replace::new(from, to).map_err(|e| meta.bad(format!("normalizer: {e}")));
    let mut normalizers = Vec::new();
    if prefix {
        normalizers.push(NormalizerWrapper::Prepend(Prepend::new(SPACE.into())));
    }
    normalizers.push(NormalizerWrapper::Replace(replace(" ", SPACE)?));
    let mut decoders = vec![DecoderWrapper::Replace(replace(SPACE, " ")?), DecoderWrapper::ByteFallback(ByteFallback::new()), DecoderWrapper::Fuse(Fuse::new())];
    if prefix {
        decoders.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
    }
    let mut tok = Tokenizer::new(bpe);
    tok.with_normalizer(Some(NormalizerSequence::new(normalizers))).map_err(|e| meta.bad(format!("normalizer: {e}")))?;
    tok.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(tok)
}

/// Every split of a mergeable piece into two pieces, ranked by the piece's score (highest
/// first; ties by id, as SentencePiece orders pieces). Control, unused and byte pieces are never
/// the product of a merge.
fn merges_by_score(tokens: &[String], types: &[i64], scores: &[f64], vocab: &Vocab) -> Vec<(String, String)> {
    let mut ranked: Vec<(f64, usize, String, String)> = Vec::new();
    for (i, piece) in tokens.iter().enumerate() {
        if matches!(types[i], CONTROL | UNUSED | BYTE) || vocab.get(piece) != Some(&(i as u32)) {
            continue;
        }
        for (at, _) in piece.char_indices().skip(1) {
            let (left, right) = piece.split_at(at);
            if vocab.contains_key(left) && vocab.contains_key(right) {
                ranked.push((scores[i], i, left.to_string(), right.to_string()));
            }
        }
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    ranked.into_iter().map(|(_, _, l, r)| (l, r)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_follow_the_merged_pieces_scores_and_skip_control_pieces() {
        let tokens: Vec<String> = ["<unk>", "<s>", "a", "b", "c", "ab", "bc", "abc", "<0x41>"].map(String::from).to_vec();
        let n = super::super::NORMAL;
        let types = [UNKNOWN, CONTROL, n, n, n, n, n, n, BYTE];
        let scores = [0.0, 0.0, -5.0, -6.0, -7.0, -2.0, -1.0, -3.0, 0.0];
        let vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let m = merges_by_score(&tokens, &types, &scores, &vocab);
        let pair = |l: &str, r: &str| (l.to_string(), r.to_string());
        // bc (-1) before ab (-2) before abc (-3), which splits as a+bc and ab+c.
        assert_eq!(m, vec![pair("b", "c"), pair("a", "b"), pair("a", "bc"), pair("ab", "c")]);
    }
}
