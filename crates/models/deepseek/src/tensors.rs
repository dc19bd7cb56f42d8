//! The checkpoint tensors a DeepSeek-V2/V3 model reads, with their HF shapes.

use finetp_core::config::{ModelConfig, TopkMethod};

/// Every tensor name and shape the model loads (MTP layers excluded).
pub fn tensor_shapes(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let (h, v, nh) = (cfg.hidden_size, cfg.vocab_size, cfg.num_attention_heads);
    let mut t = vec![("model.embed_tokens.weight".to_string(), vec![v, h]), ("model.norm.weight".into(), vec![h])];
    if !cfg.tie_word_embeddings {
        t.push(("lm_head.weight".into(), vec![v, h]));
    }
    let Some(m) = cfg.mla else { return t };
    let qk = m.qk_nope_head_dim + m.qk_rope_head_dim;
    let mlp = |t: &mut Vec<(String, Vec<usize>)>, p: String, i: usize| {
        t.push((format!("{p}.gate_proj.weight"), vec![i, h]));
        t.push((format!("{p}.up_proj.weight"), vec![i, h]));
        t.push((format!("{p}.down_proj.weight"), vec![h, i]));
    };
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        t.push((format!("{p}.input_layernorm.weight"), vec![h]));
        t.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
        let a = format!("{p}.self_attn");
        match m.q_lora_rank {
            Some(r) => {
                t.push((format!("{a}.q_a_proj.weight"), vec![r, h]));
                t.push((format!("{a}.q_a_layernorm.weight"), vec![r]));
                t.push((format!("{a}.q_b_proj.weight"), vec![nh * qk, r]));
            }
            None => t.push((format!("{a}.q_proj.weight"), vec![nh * qk, h])),
        }
        t.push((format!("{a}.kv_a_proj_with_mqa.weight"), vec![m.kv_lora_rank + m.qk_rope_head_dim, h]));
        t.push((format!("{a}.kv_a_layernorm.weight"), vec![m.kv_lora_rank]));
        t.push((format!("{a}.kv_b_proj.weight"), vec![nh * (m.qk_nope_head_dim + m.v_head_dim), m.kv_lora_rank]));
        t.push((format!("{a}.o_proj.weight"), vec![h, nh * m.v_head_dim]));
        match cfg.moe.filter(|_| cfg.is_moe_layer(l)) {
            Some(e) => {
                t.push((format!("{p}.mlp.gate.weight"), vec![e.n_routed_experts, h]));
                if e.topk_method == TopkMethod::NoauxTc {
                    t.push((format!("{p}.mlp.gate.e_score_correction_bias"), vec![e.n_routed_experts]));
                }
                for j in 0..e.n_routed_experts {
                    mlp(&mut t, format!("{p}.mlp.experts.{j}"), e.moe_intermediate_size);
                }
                if e.n_shared_experts > 0 {
                    mlp(&mut t, format!("{p}.mlp.shared_experts"), e.moe_intermediate_size * e.n_shared_experts);
                }
            }
            None => mlp(&mut t, format!("{p}.mlp"), cfg.intermediate_size),
        }
    }
    t
}
