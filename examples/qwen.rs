//! A small random Qwen2 checkpoint (q/k/v bias), written as real `config.json` +
//! `model.safetensors`, loaded through finetp-loader and run on 4 CPU ranks with fine-grained
//! TP; the sharded tokens must equal the replicated run's.
//! `cargo run --release -p finetp-examples --example qwen`

use finetp_core::config::FinegrainedTpConfig;
use finetp_examples::{Error, compare_layouts, write_random_checkpoint};
use finetp_loader::Checkpoint;
use finetp_model_qwen::tensor_shapes;

const CONFIG: &str = r#"{"model_type":"qwen2","vocab_size":1000,"hidden_size":128,"intermediate_size":352,
  "num_hidden_layers":4,"num_attention_heads":8,"num_key_value_heads":2,"rms_norm_eps":1e-6,
  "rope_theta":1000000.0,"max_position_embeddings":256,"tie_word_embeddings":true}"#;

fn main() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let cfg = finetp_core::config::ModelConfig::from_json_str(CONFIG)?;
    write_random_checkpoint(dir.path(), CONFIG, &tensor_shapes(&cfg), 21)?;
    let ckpt = Checkpoint::open(dir.path())?;
    println!("{} — Qwen2, tied embeddings, q/k/v bias", ckpt.description);
    let (cfg, weights) = (ckpt.config.clone(), ckpt.weights.clone());
    let load = move |rank: usize, be: &_, g: &_| {
        let m = finetp_model_qwen::load(be, &cfg, &*weights, g).map_err(|source| finetp_engine::EngineError::Model { rank, source })?;
        Ok(Box::new(m) as Box<dyn finetp_core::decoder::CausalLm<_>>)
    };
    let sizes = FinegrainedTpConfig { embedding: Some(2), lm_head: Some(4), o_proj: Some(4), mlp: Some(2) };
    compare_layouts(&ckpt, 4, sizes, &load)
}

