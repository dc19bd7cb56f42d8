use super::*;
use crate::config::{FinegrainedTpConfig, ModelConfig};

const GIB: f64 = (1u64 << 30) as f64;

fn deepseek() -> ModelConfig {
    ModelConfig::from_json_str(include_str!("../../tests/data/deepseek-r1.config.json")).unwrap()
}

fn w8a8() -> WeightFormat {
    WeightFormat { dtype: DType::BF16, quantization: Quantization::W8A8 }
}

/// The seed's table (DeepSeek-R1-W8A8, DP32 + EP32, size 8): o_proj 5.8, lm_head 1.51,
/// FFN 0.9, embedding 1.51, total 9.72 (GiB; the seed writes "GB" but its numbers are GiB,
/// e.g. 7/8 of the 1.726 GiB lm_head is 1.51).
#[test]
fn matches_the_seed_memory_table_within_10_percent() {
    let p = ParallelConfig::new(32, 1, 1, true, FinegrainedTpConfig::uniform(8)).unwrap();
    let r = MemoryReport::new(&deepseek(), &p, w8a8());
    let seed = [(Component::OProj, 5.8), (Component::LmHead, 1.51), (Component::Mlp, 0.9), (Component::Embedding, 1.51)];
    for (c, expected) in seed {
        let got = r.saving(c) as f64 / GIB;
        assert!((got - expected).abs() / expected <= 0.10, "{c}: {got:.3} GiB vs seed {expected}");
    }
    let total: f64 = Component::ALL.iter().map(|c| r.saving(*c) as f64 / GIB).sum();
    assert!((total - 9.72).abs() / 9.72 <= 0.10, "total {total:.3}");
}

#[test]
fn exact_bytes_for_deepseek_lm_head_and_o_proj() {
    let p = ParallelConfig::new(32, 1, 1, true, FinegrainedTpConfig::uniform(8)).unwrap();
    let r = MemoryReport::new(&deepseek(), &p, w8a8());
    assert_eq!(r.row(ModuleClass::LmHead).baseline_bytes, 129280 * 7168 * 2);
    assert_eq!(r.row(ModuleClass::LmHead).bytes, 129280 / 8 * 7168 * 2);
    // o_proj is row-parallel: int8 columns split, per-output-channel params kept whole.
    assert_eq!(r.row(ModuleClass::OProj).bytes, 61 * (7168 * 16384 / 8 + 7168 * 8));
    // 8 routed experts per rank under EP32 dominate the MoE rows, unchanged by fine-grained TP.
    assert_eq!(r.row(ModuleClass::Moe).baseline_bytes, r.row(ModuleClass::Moe).bytes);
    assert!(r.total() < r.baseline_total());
}

#[test]
fn no_finegrained_tp_saves_nothing() {
    let p = ParallelConfig::new(32, 1, 1, true, FinegrainedTpConfig::default()).unwrap();
    let r = MemoryReport::new(&deepseek(), &p, w8a8());
    assert_eq!(r.total(), r.baseline_total());
}

fn tied_llama() -> ModelConfig {
    ModelConfig::from_json_str(
        r#"{"model_type":"llama","vocab_size":49152,"hidden_size":576,"intermediate_size":1536,
            "num_hidden_layers":30,"num_attention_heads":9,"num_key_value_heads":3,"tie_word_embeddings":true}"#,
    )
    .unwrap()
}

#[test]
fn tied_embeddings_share_a_shard_only_when_sizes_match() {
    let m = tied_llama();
    let same = ParallelConfig::new(4, 1, 1, false, FinegrainedTpConfig { embedding: Some(4), lm_head: Some(4), ..Default::default() }).unwrap();
    let r = MemoryReport::new(&m, &same, WeightFormat::default());
    assert_eq!(r.row(ModuleClass::LmHead).bytes, 0);
    assert_eq!(r.row(ModuleClass::Embedding).bytes, 49152 / 4 * 576 * 2);

    let differ = ParallelConfig::new(4, 1, 1, false, FinegrainedTpConfig { embedding: Some(4), lm_head: Some(2), ..Default::default() }).unwrap();
    let r = MemoryReport::new(&m, &differ, WeightFormat::default());
    assert_eq!(r.row(ModuleClass::LmHead).bytes, 49152 / 2 * 576 * 2);
    assert!(r.saving(Component::LmHead) < 0, "a separate lm_head shard costs memory");
}

#[test]
fn dense_model_mlp_and_attention_bytes() {
    let m = tied_llama();
    let p = ParallelConfig::new(2, 1, 1, false, FinegrainedTpConfig { mlp: Some(2), ..Default::default() }).unwrap();
    let r = MemoryReport::new(&m, &p, WeightFormat::default());
    assert_eq!(r.row(ModuleClass::DenseMlp).baseline_bytes, 30 * 3 * 576 * 1536 * 2);
    assert_eq!(r.row(ModuleClass::DenseMlp).bytes, 30 * 3 * 576 * 1536);
    assert_eq!(r.row(ModuleClass::Attention).bytes, 30 * (576 * 576 + 2 * 192 * 576) * 2);
    assert_eq!(r.row(ModuleClass::Moe).bytes, 0);
}

/// Standard TP splits attention by heads (SmolLM2's 3 KV heads replicated at TP 6: one per
/// rank, not half of one) and every component; fine-grained TP splits each TP part again.
#[test]
fn tensor_parallel_composes_with_finegrained_sizes() {
    let m = tied_llama(); // 9 heads of 64, 3 KV heads, intermediate 1536, bf16
    let at = |tp: usize, mlp: Option<usize>| {
        let p = ParallelConfig::new(2, tp, 1, false, FinegrainedTpConfig { mlp, ..Default::default() }).unwrap();
        MemoryReport::new(&m, &p, WeightFormat::default())
    };
    let r = at(3, Some(2));
    assert_eq!(r.row(ModuleClass::DenseMlp).baseline_bytes, 30 * 3 * 576 * 1536 * 2 / 3);
    assert_eq!(r.row(ModuleClass::DenseMlp).bytes, 30 * 3 * 576 * 1536 * 2 / 6);
    assert_eq!(r.row(ModuleClass::Attention).bytes, 30 * (576 * 576 / 3 + 2 * 64 * 576) * 2);
    assert_eq!(r.row(ModuleClass::OProj).bytes, 30 * 576 * 576 * 2 / 3);
    // TP 9 > 3 KV heads: each rank holds one KV head (replicated three times).
    assert_eq!(at(9, None).row(ModuleClass::Attention).bytes, 30 * (576 * 576 / 9 + 2 * 64 * 576) * 2);
}

/// SmolLM2-135M's shapes (its GGUF's `config.json` equivalent).
fn smollm2() -> ModelConfig {
    ModelConfig::from_json_str(
        r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":576,"intermediate_size":1536,
            "num_attention_heads":9,"num_key_value_heads":3,"num_hidden_layers":30,"vocab_size":49152,
            "rms_norm_eps":1e-5,"rope_theta":100000,"max_position_embeddings":8192,"tie_word_embeddings":true,"head_dim":64}"#,
    )
    .unwrap()
}

/// The Q4_1 GGUF (token_embd Q8_0, every linear Q4_1, norms f32) holds 96,576,768 tensor bytes
/// (its tensor table, read with the `gguf` package): the report says exactly that unsharded;
/// o_proj at size 4 would cut blocks (576 / 4 = 144 columns), so it is named and counted in f32.
#[test]
fn block_formats_count_the_files_bytes_and_name_cut_blocks() {
    let f = WeightFormat { dtype: DType::F32, quantization: Quantization::Blocks { vocab: DType::Q8_0, linear: DType::Q4_1 } };
    let one = ParallelConfig::new(1, 1, 1, false, FinegrainedTpConfig::default()).unwrap();
    assert_eq!(MemoryReport::new(&smollm2(), &one, f).total(), 96_576_768);
    assert!(MemoryReport::cut_blocks(&smollm2(), &one, &f).is_empty());
    let fg = FinegrainedTpConfig { o_proj: Some(4), mlp: Some(4), ..Default::default() };
    let p = ParallelConfig::new(4, 1, 1, false, fg).unwrap();
    let cuts = MemoryReport::cut_blocks(&smollm2(), &p, &f);
    assert_eq!(cuts, vec![BlockCut { component: Component::OProj, parts: 4, width: 576, dtype: DType::Q4_1 }]);
    let r = MemoryReport::new(&smollm2(), &p, f);
    assert_eq!(r.row(ModuleClass::OProj).bytes, 30 * 576 * 144 * 4);
    assert_eq!(r.row(ModuleClass::DenseMlp).bytes, 30 * (2 * 384 * 18 * 20 + 576 * 12 * 20));
}
