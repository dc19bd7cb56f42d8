//! A small random DeepSeek-V3 checkpoint with every layer dense (`first_k_dense_replace` =
//! `num_hidden_layers`): MLA attention with low-rank queries, written as real `config.json` +
//! `model.safetensors`, run on 4 ranks with fine-grained TP; the sharded tokens must equal the
//! replicated run's. `cargo run --release -p finetp-examples --example deepseek_dense [-- --backend wgpu]`

use finetp_core::config::FinegrainedTpConfig;
use finetp_examples::{Error, backend_from_args, compare_layouts, write_random_checkpoint};
use finetp_loader::Checkpoint;

const CONFIG: &str = r#"{"architectures":["DeepseekV3ForCausalLM"],"model_type":"deepseek_v3","vocab_size":1000,
  "hidden_size":128,"intermediate_size":256,"moe_intermediate_size":64,"num_hidden_layers":3,"num_attention_heads":8,
  "num_key_value_heads":8,"q_lora_rank":96,"kv_lora_rank":64,"qk_nope_head_dim":16,"qk_rope_head_dim":8,"v_head_dim":16,
  "n_routed_experts":8,"first_k_dense_replace":3,"rms_norm_eps":1e-6,"rope_theta":10000,
  "max_position_embeddings":256,"tie_word_embeddings":false}"#;

fn main() -> Result<(), Error> {
    let backend = backend_from_args()?;
    let dir = tempfile::tempdir()?;
    write_random_checkpoint(dir.path(), CONFIG, 33)?;
    let ckpt = Checkpoint::open(dir.path())?;
    let cfg = &ckpt.config;
    if cfg.dense_mlp_layers() != cfg.num_hidden_layers {
        return Err("this example's config must have every layer dense".into());
    }
    println!("{} — {}, MLA, all {} layers dense", ckpt.description, cfg.architecture, cfg.num_hidden_layers);
    compare_layouts(backend, cfg, ckpt.weights.clone(), 4, FinegrainedTpConfig::uniform(4))
}
