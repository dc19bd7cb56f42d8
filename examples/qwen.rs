//! A small random Qwen2 checkpoint (q/k/v bias, tied embeddings), written as real
//! `config.json` + `model.safetensors`, loaded through finetp-loader and the model registry and
//! run on 4 ranks with fine-grained TP; the sharded tokens must equal the replicated run's.
//! `cargo run --release -p finetp-examples --example qwen [-- --backend wgpu]`

use finetp_core::config::FinegrainedTpConfig;
use finetp_examples::{Error, backend_from_args, compare_layouts, write_random_checkpoint};
use finetp_loader::Checkpoint;

const CONFIG: &str = r#"{"architectures":["Qwen2ForCausalLM"],"model_type":"qwen2","vocab_size":1000,"hidden_size":128,
  "intermediate_size":352,"num_hidden_layers":4,"num_attention_heads":8,"num_key_value_heads":2,"rms_norm_eps":1e-6,
  "rope_theta":1000000.0,"max_position_embeddings":256,"tie_word_embeddings":true}"#;

fn main() -> Result<(), Error> {
    let backend = backend_from_args()?;
    let dir = tempfile::tempdir()?;
    write_random_checkpoint(dir.path(), CONFIG, 21)?;
    let ckpt = Checkpoint::open(dir.path())?;
    println!("{} — {}, tied embeddings, q/k/v bias", ckpt.description, ckpt.config.architecture);
    let sizes = FinegrainedTpConfig { embedding: Some(2), lm_head: Some(4), o_proj: Some(4), mlp: Some(2) };
    compare_layouts(backend, &ckpt.config, ckpt.weights.clone(), 4, sizes)
}
