//! RoPE scaling against HF transformers' own frequencies (`ROPE_INIT_FUNCTIONS`, written to
//! `tests/data/hf_rope.json` by `tools/gen_goldens.py rope`): each case's `rope_parameters` is
//! read through `ModelConfig` as a `config.json` would carry it, and the inverse frequencies
//! and attention factor must equal HF's to f32 rounding (HF computes them in f32, finetp in
//! f64 then rounds: 1e-6 relative).

use finetp_core::config::ModelConfig;
use finetp_core::decoder::rope_frequencies;
use serde_json::{Value, json};

const TOL: f64 = 1e-6;

#[test]
fn rope_frequencies_match_hf_for_every_scheme() {
    let data: Value = serde_json::from_str(include_str!("data/hf_rope.json")).unwrap();
    let cases = data["cases"].as_array().unwrap();
    assert!(cases.len() >= 8, "every scheme has a case");
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let hd = c["head_dim"].as_u64().unwrap();
        let config = json!({
            "model_type": "llama", "vocab_size": 64, "hidden_size": hd * 4, "intermediate_size": 64,
            "num_hidden_layers": 1, "num_attention_heads": 4, "head_dim": hd,
            "max_position_embeddings": c["max_position_embeddings"], "rope_parameters": c["rope_parameters"],
        });
        let cfg = ModelConfig::from_json_str(&config.to_string()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (inv, attention) = rope_frequencies(cfg.rope_theta, cfg.head_dim, cfg.rope_scaling.as_ref());
        let want: Vec<f64> = c["inv_freq"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(inv.len(), want.len(), "{name}");
        for (i, (&got, &w)) in inv.iter().zip(&want).enumerate() {
            assert!((f64::from(got) - w).abs() <= TOL * w.abs(), "{name}: inv_freq[{i}] = {got:e}, HF {w:e}");
        }
        let want = c["attention_factor"].as_f64().unwrap();
        assert!((f64::from(attention) - want).abs() <= TOL * want, "{name}: attention factor {attention}, HF {want}");
    }
}
