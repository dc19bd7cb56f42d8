//! Tiny random checkpoints of every architecture finetp supports, small enough to run in a test
//! in milliseconds and shaped so that every fine-grained size up to 4 divides them: vocabulary
//! 97 (padded to 128), hidden 32, 4 heads of 8 (o_proj input 32), MLP intermediate 64.
//!
//! [`write()`] puts one on disk as a real checkpoint — `config.json`, `model.safetensors` (f32)
//! and a word-level `tokenizer.json` whose token `i` is the word `t{i}` — so that `finetp run
//! --model <dir>` and the loaders see exactly what a downloaded model gives them.

use std::path::Path;

use finetp_core::config::{Architecture, ModelConfig};
use finetp_core::shard::InMemoryWeights;

/// Vocabulary of every tiny model.
pub const VOCAB: usize = 97;

/// SmolLM2-135M-Instruct's `config.json` shapes (a Llama: 30 layers, hidden 576, 9 heads / 3
/// kv heads, vocabulary 49152, tied embeddings): what device checks build random weights for
/// where the 98 MB GGUF is not carried.
pub const SMOLLM2_135M_CONFIG: &str = r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama","vocab_size":49152,"hidden_size":576,
  "intermediate_size":1536,"num_hidden_layers":30,"num_attention_heads":9,"num_key_value_heads":3,"rms_norm_eps":1e-5,
  "rope_theta":100000.0,"max_position_embeddings":8192,"tie_word_embeddings":true}"#;

/// The `config.json` of a tiny `arch` model.
pub fn config_json(arch: Architecture) -> String {
    let common = r#""vocab_size":97,"hidden_size":32,"intermediate_size":64,"num_hidden_layers":2,
        "num_attention_heads":4,"rms_norm_eps":1e-5,"rope_theta":10000.0,"max_position_embeddings":256"#;
    let extra = match arch {
        Architecture::Llama => r#""num_key_value_heads":2,"tie_word_embeddings":false"#,
        // A window shorter than the tests' sequences, so that it matters.
        Architecture::Mistral => r#""num_key_value_heads":2,"tie_word_embeddings":false,"sliding_window":6"#,
        Architecture::Qwen2 => r#""num_key_value_heads":2,"tie_word_embeddings":true"#,
        Architecture::Qwen3 => r#""num_key_value_heads":2,"tie_word_embeddings":false,"head_dim":8"#,
        Architecture::DeepseekV2 => {
            r#""num_key_value_heads":4,"q_lora_rank":null,"kv_lora_rank":16,"qk_nope_head_dim":8,"qk_rope_head_dim":4,
            "v_head_dim":8,"n_routed_experts":4,"n_shared_experts":1,"moe_intermediate_size":16,"num_experts_per_tok":2,
            "first_k_dense_replace":1,"moe_layer_freq":1,"scoring_func":"softmax","topk_method":"group_limited_greedy",
            "n_group":2,"topk_group":1,"routed_scaling_factor":1.5,"tie_word_embeddings":false"#
        }
        Architecture::DeepseekV3 => {
            r#""num_key_value_heads":4,"q_lora_rank":24,"kv_lora_rank":16,"qk_nope_head_dim":8,"qk_rope_head_dim":4,
            "v_head_dim":8,"n_routed_experts":4,"n_shared_experts":1,"moe_intermediate_size":16,"num_experts_per_tok":2,
            "first_k_dense_replace":1,"moe_layer_freq":1,"scoring_func":"sigmoid","topk_method":"noaux_tc","n_group":2,
            "topk_group":1,"routed_scaling_factor":2.5,"norm_topk_prob":true,"tie_word_embeddings":false"#
        }
    };
    format!(r#"{{"architectures":["{}"],"model_type":"{}",{common},{extra}}}"#, arch.hf_class(), arch.model_type())
}

/// The parsed config of a tiny `arch` model.
pub fn config(arch: Architecture) -> ModelConfig {
    ModelConfig::from_json_str(&config_json(arch)).expect("the tiny configs are valid")
}

/// Random f32 weights for every tensor the model reads (uniform in ±0.3, norms near 1).
pub fn weights(cfg: &ModelConfig, seed: u64) -> InMemoryWeights {
    InMemoryWeights::random(&finetp_models::tensor_shapes(cfg), seed, 0.3)
}

/// A word-level tokenizer of `vocab` tokens `t0 … t{vocab-1}`, split on whitespace.
pub fn tokenizer_json(vocab: usize) -> String {
    let words: Vec<String> = (0..vocab).map(|i| format!("\"t{i}\":{i}")).collect();
    format!(
        r#"{{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
        "pre_tokenizer":{{"type":"WhitespaceSplit"}},"post_processor":null,"decoder":null,
        "model":{{"type":"WordLevel","vocab":{{{}}},"unk_token":"t0"}}}}"#,
        words.join(",")
    )
}

/// Writes a tiny `arch` checkpoint into `dir`: `config.json`, `model.safetensors` of random f32
/// weights from `seed`, and `tokenizer.json`.
pub fn write(dir: &Path, arch: Architecture, seed: u64) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("writing a tiny {arch} checkpoint in {}: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
    std::fs::write(dir.join("config.json"), config_json(arch)).map_err(|e| err(&e))?;
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json(VOCAB)).map_err(|e| err(&e))?;
    write_safetensors(&dir.join("model.safetensors"), &weights(&config(arch), seed)).map_err(|e| err(&e))
}

/// Writes `w` as one f32 safetensors file.
pub fn write_safetensors(path: &Path, w: &InMemoryWeights) -> Result<(), String> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = w
        .tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.to_f32_vec().unwrap_or_default().iter().flat_map(|x| x.to_le_bytes()).collect(), t.shape.clone()))
        .collect();
    let views = bytes
        .iter()
        .map(|(n, b, s)| Ok((n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(|e| e.to_string())?;
    safetensors::serialize_to_file(views, None, path).map_err(|e| e.to_string())
}
