//! KV-cache bytes, estimated from the config before any cache is allocated (the engine
//! reserves blocks per sequence, [`KvLayout::reserved`](crate::decoder::KvLayout::reserved)).

use crate::backend::DType;
use crate::config::ModelConfig;
use crate::decoder::{HeadShard, KV_BLOCK_SIZE, KvLayout};

/// Bytes one cached token takes on one rank of TP size `tp` (all layers, that rank's heads:
/// split KV heads, or a replicated one; MLA caches one latent of `kv_lora_rank +
/// qk_rope_head_dim` per layer, shared by every head and held whole on every TP rank).
pub fn kv_bytes_per_token(m: &ModelConfig, tp: usize, dtype: DType) -> u64 {
    let (heads, dk, dv) = match m.mla {
        Some(a) => (1, a.kv_lora_rank + a.qk_rope_head_dim, 0),
        None => (HeadShard::new(m.num_attention_heads, m.num_key_value_heads, 0, tp).kv_heads(), m.head_dim, m.head_dim),
    };
    (m.num_hidden_layers * heads * (dk + dv) * dtype.size_in_bytes()) as u64
}

/// The KV cache one rank reserves for `seqs` sequences of up to `max_len` tokens, or `None`
/// when the count overflows.
pub fn reserved_kv_bytes(m: &ModelConfig, tp: usize, dtype: DType, seqs: usize, max_len: usize) -> Option<u64> {
    let layout = KvLayout::reserved(seqs, max_len, KV_BLOCK_SIZE)?;
    let tokens = (layout.blocks as u64).checked_mul(layout.block_size as u64)?;
    tokens.checked_mul(kv_bytes_per_token(m, tp, dtype))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smollm2_at_tp3_holds_one_kv_head() {
        let m = ModelConfig::from_json_str(
            r#"{"model_type":"llama","vocab_size":49152,"hidden_size":576,"intermediate_size":1536,
                "num_hidden_layers":30,"num_attention_heads":9,"num_key_value_heads":3}"#,
        )
        .unwrap();
        assert_eq!(kv_bytes_per_token(&m, 1, DType::F32), 30 * 3 * 128 * 4);
        assert_eq!(kv_bytes_per_token(&m, 3, DType::F32), 30 * 128 * 4);
        // 2 sequences of 20 tokens reserve 2 x 2 blocks of 16.
        assert_eq!(reserved_kv_bytes(&m, 3, DType::F32, 2, 20), Some(64 * 30 * 128 * 4));
        assert_eq!(reserved_kv_bytes(&m, 3, DType::F32, usize::MAX, usize::MAX), None);
    }
}
