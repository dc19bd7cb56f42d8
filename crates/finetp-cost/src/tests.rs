use super::*;
use finetp_core::backend::DType;
use finetp_core::config::{Component, FinegrainedTpConfig, ModelConfig, ParallelConfig};
use finetp_core::memory::{MemoryReport, Quantization, WeightFormat};

const GIB: f64 = (1u64 << 30) as f64;

fn deepseek() -> ModelConfig {
    ModelConfig::from_json_str(include_str!("../../finetp-core/tests/data/deepseek-r1.config.json")).unwrap()
}

fn w8a8() -> WeightFormat {
    WeightFormat { dtype: DType::BF16, quantization: Quantization::W8A8 }
}

fn ascend() -> HardwareProfile {
    HardwareProfile::builtin("ascend-910b").unwrap()
}

fn dp32(fg: FinegrainedTpConfig) -> ParallelConfig {
    ParallelConfig::new(32, 1, 1, true, fg).unwrap()
}

fn row(e: &Estimate, c: Component) -> &ComponentEstimate {
    e.row(c).unwrap()
}

/// The seed's scenario: DeepSeek-R1-W8A8, DP32 + EP, size 8 everywhere, batch 24, Ascend 910B.
#[test]
fn seed_scenario_memory_and_tpot_directions() {
    let e = estimate(&deepseek(), &dp32(FinegrainedTpConfig::uniform(8)), w8a8(), 24, &ascend());
    eprintln!("{e}");
    for (c, seed) in [(Component::OProj, 5.8), (Component::LmHead, 1.51), (Component::Mlp, 0.9), (Component::Embedding, 1.51)] {
        let got = row(&e, c).memory_saved_bytes as f64 / GIB;
        assert!((got - seed).abs() / seed <= 0.10, "{c}: {got:.3} GiB vs seed {seed}");
    }
    let net = |c| row(&e, c).net_tpot_delta_s;
    assert!(net(Component::OProj) > 0.0, "seed: o_proj TP=8 degrades TPOT\n{e}");
    assert!(net(Component::LmHead) < 0.0, "seed: lm_head TP=8 improves TPOT\n{e}");
    assert!(net(Component::Mlp) < 0.0, "seed: MLP TP=8 improves TPOT\n{e}");
    // A gather reads only the looked-up rows: sharding the table saves no read time, and the
    // model prices the embedding's two collectives as a (small) loss. The seed reports -1.0 ms.
    assert!(row(&e, Component::Embedding).read_time_saved_s <= 0.0);
    assert!(net(Component::Embedding) > 0.0 && net(Component::Embedding) < 1e-3, "{e}");
    assert_eq!(row(&e, Component::OProj).collectives_per_step, 2 * 61);
    assert_eq!(row(&e, Component::Mlp).collectives_per_step, 2 * 3);
    assert_eq!(e.weight_bytes_per_rank, MemoryReport::new(&deepseek(), &dp32(FinegrainedTpConfig::uniform(8)), w8a8()).total());
}

/// The calibration the 910B profile's `collective_alpha_us` documents: o_proj at size 4 is
/// within 0.3 ms of break-even (vllm-ascend PR #2167), and worse at 8 than at 4.
#[test]
fn ascend_o_proj_breaks_even_at_four() {
    let at = |s| {
        let fg = FinegrainedTpConfig { o_proj: Some(s), ..Default::default() };
        row(&estimate(&deepseek(), &dp32(fg), w8a8(), 24, &ascend()), Component::OProj).net_tpot_delta_s
    };
    assert!(at(4).abs() < 0.3e-3, "o_proj@4: {:.3} ms", at(4) * 1e3);
    assert!(at(8) > at(4));
}

#[test]
fn collective_volumes_follow_the_research_shapes() {
    let e = estimate(&deepseek(), &dp32(FinegrainedTpConfig::uniform(8)), w8a8(), 24, &ascend());
    let lm = row(&e, Component::LmHead);
    let kinds: Vec<_> = lm.collectives.iter().map(|c| (c.kind, c.buffer_bytes)).collect();
    // all_gather of 8×24 hidden rows; all_to_all of [8·24, Vp/8] logits = 24·Vp elements.
    assert_eq!(kinds, vec![(CollectiveKind::AllGather, 8 * 24 * 7168 * 2), (CollectiveKind::AllToAll, 24 * 129280 * 2)]);
    assert_eq!(lm.collectives[0].bytes_per_rank, 7 * 24 * 7168 * 2);
    let o = row(&e, Component::OProj);
    assert_eq!(o.collectives[0].kind, CollectiveKind::AllToAll);
    assert_eq!(o.collectives[0].buffer_bytes, 24 * 16384 * 2);
    assert_eq!(o.collectives[1].kind, CollectiveKind::ReduceScatter);
    assert!(o.collectives.iter().all(|c| c.calls_per_step == 61 && !c.spans_nodes));
    let emb = row(&e, Component::Embedding);
    assert_eq!(emb.collectives[0].buffer_bytes, 8 * 24 * 4, "token ids are u32");
}

#[test]
fn absurd_batches_do_not_overflow() {
    let e = estimate(&deepseek(), &dp32(FinegrainedTpConfig::uniform(8)), w8a8(), usize::MAX, &ascend());
    assert!(e.rows.iter().all(|r| r.net_tpot_delta_s.is_finite()));
    assert!(e.net_tpot_delta_s() > 0.0, "huge batches make every collective dominate");
    let e = estimate(&deepseek(), &dp32(FinegrainedTpConfig::uniform(8)), w8a8(), 0, &ascend());
    assert!(e.row(Component::LmHead).unwrap().net_tpot_delta_s < 0.0);
}

#[test]
fn size_one_and_absent_sizes_change_nothing() {
    for fg in [FinegrainedTpConfig::default(), FinegrainedTpConfig::uniform(1)] {
        let e = estimate(&deepseek(), &dp32(fg), w8a8(), 24, &HardwareProfile::builtin("h100-sxm").unwrap());
        for r in &e.rows {
            assert_eq!(r.memory_saved_bytes, 0, "{fg:?}");
            assert_eq!((r.read_time_saved_s, r.comm_time_added_s, r.net_tpot_delta_s), (0.0, 0.0, 0.0), "{fg:?}");
            assert!(r.collectives.is_empty() && r.collectives_per_step == 0);
        }
    }
}

#[test]
fn groups_larger_than_a_node_use_the_inter_node_link() {
    let hw = ascend();
    let at = |s| {
        let fg = FinegrainedTpConfig { lm_head: Some(s), ..Default::default() };
        estimate(&deepseek(), &dp32(fg), w8a8(), 24, &hw)
    };
    let (e8, e16) = (at(8), at(16));
    assert!(!row(&e8, Component::LmHead).collectives[0].spans_nodes);
    assert!(row(&e16, Component::LmHead).collectives.iter().all(|c| c.spans_nodes));
    // TP 2 doubles each group's footprint: size 8 now spans 16 devices.
    let p = ParallelConfig::new(16, 2, 1, true, FinegrainedTpConfig { lm_head: Some(8), ..Default::default() }).unwrap();
    let e = estimate(&deepseek(), &p, w8a8(), 24, &hw);
    let lm = row(&e, Component::LmHead);
    assert!(lm.collectives[0].spans_nodes);
    // ...and fine-grained TP splits each TP part again: half the weight bytes read of TP 1 at
    // the same size, and half the logits through the all-to-all.
    let tp1 = estimate(&deepseek(), &ParallelConfig::new(16, 1, 1, true, FinegrainedTpConfig { lm_head: Some(8), ..Default::default() }).unwrap(), w8a8(), 24, &hw);
    let lm1 = row(&tp1, Component::LmHead);
    let vocab_rows = |r: &ComponentEstimate| r.read_bytes;
    assert!(vocab_rows(lm) < vocab_rows(lm1) * 6 / 10, "{} vs {}", lm.read_bytes, lm1.read_bytes);
    assert_eq!(lm.collectives[1].buffer_bytes * 2, lm1.collectives[1].buffer_bytes);
}

#[test]
fn auto_without_budget_picks_valid_tpot_optimal_sizes() {
    let m = deepseek();
    let p = dp32(FinegrainedTpConfig::uniform(4)); // its sizes are ignored
    let free = auto(&m, &p, w8a8(), 24, &ascend(), None).unwrap();
    eprintln!("{free}");
    m.validate_parallel(&free.parallel).unwrap();
    for c in Component::ALL {
        if let Some(s) = free.config.get(c) {
            assert!(s > 1 && 32 % s == 0, "{c}: {s}");
        }
        // No single component can do better than the chosen size.
        for s in [2, 4, 8, 16, 32] {
            let mut fg = free.config;
            fg.set(c, Some(s));
            let alt = estimate(&m, &dp32(fg), w8a8(), 24, &ascend());
            assert!(alt.net_tpot_delta_s() >= free.estimate.net_tpot_delta_s() - 1e-12, "{c}={s} beats {:?}", free.config);
        }
    }
    assert!(free.config.lm_head.is_some() && free.config.mlp.is_some(), "{:?}", free.config);
    assert_eq!(free.config.embedding, None, "embedding TP costs TPOT in this model");
    assert!(free.estimate.net_tpot_delta_s() < 0.0);
}

#[test]
fn auto_with_a_tight_budget_fits_it() {
    let (m, p) = (deepseek(), dp32(FinegrainedTpConfig::default()));
    let free = auto(&m, &p, w8a8(), 24, &ascend(), None).unwrap();
    let tight = free.weight_bytes_per_rank - (3u64 << 30);
    let fit = auto(&m, &p, w8a8(), 24, &ascend(), Some(tight)).unwrap();
    assert!(fit.weight_bytes_per_rank <= tight, "{fit}");
    assert_eq!(fit.weight_bytes_per_rank, MemoryReport::new(&m, &fit.parallel, w8a8()).total());
    assert!(fit.config.o_proj.is_some(), "o_proj is the big saver: {:?}", fit.config);
    assert!(fit.estimate.net_tpot_delta_s() >= free.estimate.net_tpot_delta_s());
    // A budget the free choice already meets changes nothing.
    let roomy = auto(&m, &p, w8a8(), 24, &ascend(), Some(free.weight_bytes_per_rank)).unwrap();
    assert_eq!(roomy.config, free.config);
}

#[test]
fn auto_with_an_impossible_budget_names_the_smallest_footprint() {
    let (m, p) = (deepseek(), dp32(FinegrainedTpConfig::default()));
    let e = auto(&m, &p, w8a8(), 24, &ascend(), Some(1 << 30)).unwrap_err();
    let CostError::OverBudget { min_bytes, smallest, dp, .. } = &e else { panic!("{e:?}") };
    assert_eq!(*dp, 32);
    let at_min = ParallelConfig { finegrained_tp: *smallest, ..p.clone() };
    assert_eq!(*min_bytes, MemoryReport::new(&m, &at_min, w8a8()).total());
    assert_eq!(smallest.o_proj, Some(32));
    let msg = e.to_string();
    assert!(msg.contains("smallest per-rank weight footprint") && msg.contains("oproj_tensor_parallel_size"), "{msg}");
}

#[test]
fn auto_prices_a_tied_embedding_pair_by_real_memory() {
    let m = ModelConfig::from_json_str(
        r#"{"model_type":"llama","vocab_size":49152,"hidden_size":576,"intermediate_size":1536,
        "num_hidden_layers":30,"num_attention_heads":9,"num_key_value_heads":3,"tie_word_embeddings":true}"#,
    )
    .unwrap();
    let p = ParallelConfig::new(4, 1, 1, false, FinegrainedTpConfig::default()).unwrap();
    let hw = HardwareProfile::builtin("cpu-local").unwrap();
    let full = MemoryReport::new(&m, &p, WeightFormat::default()).total();
    let fit = auto(&m, &p, WeightFormat::default(), 4, &hw, Some(full - 1)).unwrap();
    assert!(fit.weight_bytes_per_rank < full);
    assert_eq!(fit.weight_bytes_per_rank, MemoryReport::new(&m, &fit.parallel, WeightFormat::default()).total());
}

#[test]
fn builtin_profiles_parse_and_round_trip() {
    let names = HardwareProfile::builtin_names();
    assert_eq!(names, ["ascend-910b", "h100-sxm", "a100", "cpu-local"]);
    for n in names {
        let p = HardwareProfile::builtin(n).unwrap();
        assert_eq!(p.name, n);
        assert_eq!(HardwareProfile::from_toml_str(&p.to_toml(), "round-trip").unwrap(), p);
        assert_eq!(HardwareProfile::resolve(n).unwrap(), p);
    }
    // The files on disk are the ones built in.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../profiles");
    let on_disk = std::fs::read_dir(&dir).unwrap().filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "toml")).count();
    assert_eq!(on_disk, 4);
    assert_eq!(HardwareProfile::from_path(&dir.join("a100.toml")).unwrap(), HardwareProfile::builtin("a100").unwrap());
}

#[test]
fn bad_profiles_name_the_file_and_the_field() {
    let good = HardwareProfile::builtin("a100").unwrap().to_toml();
    let missing = good.lines().filter(|l| !l.starts_with("compute_tflops")).collect::<Vec<_>>().join("\n");
    let e = HardwareProfile::from_toml_str(&missing, "my.toml").unwrap_err();
    assert!(matches!(&e, ProfileError::Parse { field: Some(f), .. } if f == "compute_tflops"), "{e}");
    assert!(e.to_string().contains("my.toml"), "{e}");

    let e = HardwareProfile::from_toml_str(&format!("{good}\nmemory_bandwith_gbps = 1.0\n"), "typo.toml").unwrap_err();
    assert!(matches!(&e, ProfileError::Parse { field: Some(f), .. } if f == "memory_bandwith_gbps"), "{e}");

    let e = HardwareProfile::from_toml_str(&good.replace("devices_per_node = 8", "devices_per_node = \"eight\""), "t.toml").unwrap_err();
    assert!(matches!(&e, ProfileError::Parse { field: Some(f), line: Some(_), .. } if f == "devices_per_node"), "{e}");

    let e = HardwareProfile::from_toml_str(&good.replace("memory_bandwidth_gbps = 2039.0", "memory_bandwidth_gbps = -1.0"), "neg.toml").unwrap_err();
    assert!(matches!(e, ProfileError::Value { field: "memory_bandwidth_gbps", .. }), "{e}");
    assert!(e.to_string().contains("neg.toml"));

    let e = HardwareProfile::from_toml_str("name = [", "broken.toml").unwrap_err();
    assert!(matches!(e, ProfileError::Parse { line: Some(1), .. }), "{e}");

    let e = HardwareProfile::resolve("no-such-profile").unwrap_err();
    assert!(e.to_string().contains("ascend-910b"), "{e}");
    let e = HardwareProfile::from_path(std::path::Path::new("/nonexistent/x.toml")).unwrap_err();
    assert!(matches!(e, ProfileError::File { .. }) && e.to_string().contains("/nonexistent/x.toml"));
}

#[test]
fn layer_overhead_moves_absolute_times_but_never_a_delta() {
    let base = ascend();
    let mut slow = base.clone();
    slow.layer_overhead_us = 100.0;
    let p = dp32(FinegrainedTpConfig::uniform(8));
    let (a, b) = (estimate(&deepseek(), &p, w8a8(), 24, &base), estimate(&deepseek(), &p, w8a8(), 24, &slow));
    for c in Component::ALL {
        let (ra, rb) = (row(&a, c), row(&b, c));
        let calls = match c {
            Component::OProj => deepseek().num_hidden_layers,
            Component::Mlp => deepseek().dense_mlp_layers(),
            _ => 1,
        } as f64;
        assert!((rb.gemm_time_s - ra.gemm_time_s - calls * 100e-6).abs() < 1e-12, "{c}: one overhead per layer call");
        assert!((rb.net_tpot_delta_s - ra.net_tpot_delta_s).abs() < 1e-12, "{c}: paid with and without TP alike");
    }
}
