//! The checkpoint tensors a Llama-family model reads, with their HF shapes.

use finetp_core::config::ModelConfig;

/// Every tensor name and shape the model loads (`lm_head.weight` only when untied). Used to
/// check a checkpoint up front and to write random checkpoints for tests and examples.
pub fn tensor_shapes(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (q, kv) = (cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim);
    let mut t = vec![("model.embed_tokens.weight".to_string(), vec![v, h]), ("model.norm.weight".into(), vec![h])];
    if !cfg.tie_word_embeddings {
        t.push(("lm_head.weight".into(), vec![v, h]));
    }
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        t.push((format!("{p}.input_layernorm.weight"), vec![h]));
        t.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
        for (n, out) in [("q", q), ("k", kv), ("v", kv)] {
            t.push((format!("{p}.self_attn.{n}_proj.weight"), vec![out, h]));
            if cfg.qkv_bias {
                t.push((format!("{p}.self_attn.{n}_proj.bias"), vec![out]));
            }
        }
        if cfg.qk_norm {
            t.push((format!("{p}.self_attn.q_norm.weight"), vec![cfg.head_dim]));
            t.push((format!("{p}.self_attn.k_norm.weight"), vec![cfg.head_dim]));
        }
        t.push((format!("{p}.self_attn.o_proj.weight"), vec![h, cfg.o_proj_in_features()]));
        t.push((format!("{p}.mlp.gate_proj.weight"), vec![i, h]));
        t.push((format!("{p}.mlp.up_proj.weight"), vec![i, h]));
        t.push((format!("{p}.mlp.down_proj.weight"), vec![h, i]));
    }
    t
}
