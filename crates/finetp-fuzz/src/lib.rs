//! The fuzz targets: each parser that reads a user's file or flag, fed arbitrary bytes, through
//! the same entry points `finetp` uses. A target panics only where finetp would (a panic, an
//! overflow, an out-of-bounds index, an abort on a huge allocation): every refusal must be a
//! typed error. Where a parse succeeds, the target checks what the rest of finetp relies on.
//!
//! The targets run as tests in `tests/targets.rs` (bolero: the committed corpus under
//! `tests/__fuzz__/`, then random inputs) and coverage-guided under `cargo bolero test`
//! (`ci/fuzz.sh`). `tools/fuzz_seeds.py` writes the seed corpora with independent writers.

/// Linked into every binary of this crate (see Cargo.toml); the targets' tests use it.
pub use bolero;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use finetp_core::config::{AdditionalConfig, ModelConfig, ParallelConfig};
use finetp_core::memory::{MemoryReport, Quantization, WeightFormat};
use finetp_core::plan::Plan;
use finetp_core::shard::{Axis, ShardSpec};
use finetp_loader::Checkpoint;

/// The config the safetensors target puts beside the fuzzed `model.safetensors`: a one-layer
/// Llama small enough that a whole file of its tensors is a short input (`tools/fuzz_seeds.py`
/// writes seeds for exactly these shapes).
pub const SAFETENSORS_CONFIG: &str = r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama","vocab_size":8,
    "hidden_size":8,"intermediate_size":8,"num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,
    "rms_norm_eps":1e-5,"rope_theta":10000.0,"max_position_embeddings":64,"tie_word_embeddings":false}"#;

/// A word-level tokenizer of 8 tokens for that config.
const TOKENIZER_JSON: &str = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
    "pre_tokenizer":{"type":"WhitespaceSplit"},"post_processor":null,"decoder":null,
    "model":{"type":"WordLevel","vocab":{"t0":0,"t1":1,"t2":2,"t3":3,"t4":4,"t5":5,"t6":6,"t7":7},"unk_token":"t0"}}"#;

/// One scratch directory per process: the file-based targets rewrite their file in it for
/// every input (the loaders read checkpoints from disk, through a memory map).
fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a scratch directory")).path()
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// GGUF bytes: the header, metadata and tensor table parsed in memory; then, as a `.gguf`
/// file, the whole open (config from metadata, tokenizer from the vocabulary) and a load of
/// every tensor the config implies.
pub fn gguf(bytes: &[u8]) {
    if let Ok((_, tensors)) = finetp_loader::gguf::parse_tables(bytes, Path::new("input.gguf")) {
        for (name, t) in &tensors {
            let end = t.offset.checked_add(t.bytes);
            assert!(end.is_some_and(|e| e <= bytes.len()), "tensor {name} was accepted past the end: {t:?} of {} bytes", bytes.len());
        }
    }
    let path = scratch().join("model.gguf");
    write(&path, bytes);
    if let Ok(ckpt) = Checkpoint::open(&path) {
        exercise(&ckpt);
    }
}

/// A `model.safetensors` beside [`SAFETENSORS_CONFIG`]: the open, then every tensor loaded whole
/// and in halves along each axis.
pub fn safetensors(bytes: &[u8]) {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let d = scratch().join("hf");
        std::fs::create_dir_all(&d).expect("the checkpoint directory");
        write(&d.join("config.json"), SAFETENSORS_CONFIG.as_bytes());
        write(&d.join("tokenizer.json"), TOKENIZER_JSON.as_bytes());
        d
    });
    write(&dir.join("model.safetensors"), bytes);
    if let Ok(ckpt) = Checkpoint::open(dir) {
        exercise(&ckpt);
    }
}

/// Loads every tensor the checkpoint's config implies, whole and as two halves of each axis,
/// and encodes a little text: what a rank does with a checkpoint that opened. Errors are fine;
/// a panic is not.
fn exercise(ckpt: &Checkpoint) {
    for (name, expected) in finetp_models::tensor_shapes(&ckpt.config) {
        let Ok(shape) = ckpt.weights.shape(&name) else { continue };
        if shape != expected {
            continue;
        }
        let rows = shape[0];
        let _ = ckpt.weights.load(&name, &ShardSpec::full(Axis::Rows, rows));
        for (axis, len) in [(Axis::Rows, rows), (Axis::Cols, shape.get(1).copied().unwrap_or(0))] {
            if len >= 2 && len.is_multiple_of(2) {
                for part in 0..2 {
                    let spec = ShardSpec::even(axis, len, part, 2);
                    let _ = ckpt.weights.load(&name, &spec);
                    let _ = ckpt.weights.load_stored(&name, &spec);
                }
            }
        }
    }
    if let Some(tok) = &ckpt.tokenizer {
        let _ = tok.encode("the t0 t1 hello", false);
    }
}

/// config.json text: the parse, then what `finetp plan` computes from it for a few layouts
/// (validation against the model, the plan, the memory report in every weight format, the KV
/// cache size) — the products of sizes read from the file.
pub fn config_json(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    let Ok(model) = ModelConfig::from_json_str(text) else { return };
    let _ = finetp_models::tensor_shapes(&model);
    if let Ok(raw) = serde_json::from_str::<serde_json::Value>(text) {
        let _ = finetp_loader::Fp8BlockScale::from_config(&raw, "config.json");
    }
    for (dp, tp, size) in [(1, 1, 1), (2, 1, 2), (4, 2, 2), (8, 1, 8)] {
        let fg = finetp_core::config::FinegrainedTpConfig::uniform(size);
        let Ok(parallel) = ParallelConfig::new(dp, tp, 1, false, fg) else { continue };
        if model.validate_parallel(&parallel).is_err() {
            continue;
        }
        let _ = Plan::new(&parallel);
        for quantization in [Quantization::None, Quantization::W8A8] {
            let format = WeightFormat { dtype: finetp_core::backend::DType::BF16, quantization };
            let report = MemoryReport::new(&model, &parallel, format);
            let _ = report.total();
        }
        let _ = finetp_core::memory::reserved_kv_bytes(&model, tp, finetp_core::backend::DType::F32, 4, model.max_position_embeddings);
    }
}

/// `--additional-config`: the first two bytes pick `--data-parallel-size` (1–64) and
/// `--tensor-parallel-size` (1–4), the rest is the flag's JSON. A parsed config must survive a
/// round trip through the JSON finetp prints, and a valid layout must plan every rank into
/// exactly one group of each component.
pub fn additional_config(bytes: &[u8]) {
    let [a, b, json @ ..] = bytes else { return };
    let (dp, tp) = (usize::from(*a % 64) + 1, usize::from(*b % 4) + 1);
    let Ok(text) = std::str::from_utf8(json) else { return };
    let Ok(cfg) = AdditionalConfig::parse(text) else { return };
    let fg = cfg.finegrained_tp;
    let again = AdditionalConfig::parse(&fg.to_additional_config_json()).expect("finetp's own --additional-config JSON parses");
    assert_eq!(again.finegrained_tp, fg, "the round trip through to_additional_config_json changed the config");
    let Ok(parallel) = ParallelConfig::new(dp, tp, 1, false, fg) else { return };
    let plan = Plan::new(&parallel);
    for c in finetp_core::config::Component::ALL {
        for rank in 0..plan.world_size() {
            let group = plan.group_of(c, rank).expect("every rank is in a group of every component");
            assert!(group.contains(&rank) && group.len() == parallel.size(c), "{c:?}: rank {rank} in {group:?}");
        }
    }
}
