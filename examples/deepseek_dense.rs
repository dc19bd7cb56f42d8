//! A small random DeepSeek-V3 checkpoint with every layer dense (`first_k_dense_replace` =
//! `num_hidden_layers`): MLA attention with low-rank queries, written as real `config.json` +
//! `model.safetensors`, run on 4 CPU ranks with fine-grained TP; the sharded tokens must equal
//! the replicated run's. `cargo run --release -p finetp-examples --example deepseek_dense`

use finetp_core::config::FinegrainedTpConfig;
use finetp_examples::{Error, compare_layouts, write_random_checkpoint};
use finetp_loader::Checkpoint;
use finetp_model_deepseek::{DeepseekV3, MoeExtra, tensor_shapes};

const CONFIG: &str = r#"{"model_type":"deepseek_v3","vocab_size":1000,"hidden_size":128,"intermediate_size":256,
  "moe_intermediate_size":64,"num_hidden_layers":3,"num_attention_heads":8,"num_key_value_heads":8,
  "q_lora_rank":96,"kv_lora_rank":64,"qk_nope_head_dim":16,"qk_rope_head_dim":8,"v_head_dim":16,
  "n_routed_experts":8,"first_k_dense_replace":3,"rms_norm_eps":1e-6,"rope_theta":10000,
  "max_position_embeddings":256,"tie_word_embeddings":false}"#;

fn main() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let cfg = finetp_core::config::ModelConfig::from_json_str(CONFIG)?;
    assert_eq!(cfg.dense_mlp_layers(), cfg.num_hidden_layers, "every layer is dense");
    write_random_checkpoint(dir.path(), CONFIG, &tensor_shapes(&cfg), 33)?;
    let ckpt = Checkpoint::open(dir.path())?;
    println!("{} — DeepSeek-V3 architecture, MLA, all {} layers dense", ckpt.description, cfg.num_hidden_layers);
    let (cfg, weights) = (ckpt.config.clone(), ckpt.weights.clone());
    let load = move |rank: usize, be: &_, g: &_| {
        let m = DeepseekV3::load(be, &cfg, &*weights, g, MoeExtra::default()).map_err(|source| finetp_engine::EngineError::Model { rank, source })?;
        Ok(Box::new(m) as Box<dyn finetp_core::decoder::CausalLm<_>>)
    };
    compare_layouts(&ckpt, 4, FinegrainedTpConfig::uniform(4), &load)
}
