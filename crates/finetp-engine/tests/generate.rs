//! End-to-end generation on a small random Llama: every fine-grained TP layout, eager and graph,
//! produces exactly the tokens of the replicated (no fine-grained TP) run; idle ranks, dead
//! ranks and bad requests behave.

use std::sync::Arc;
use std::time::Duration;

use finetp_backend_cpu::CpuBackend;
use finetp_core::config::{FinegrainedTpConfig, ModelConfig, ParallelConfig};
use finetp_core::decoder::ModelError;
use finetp_core::plan::Plan;
use finetp_core::shard::InMemoryWeights;
use finetp_engine::{EngineConfig, EngineError, ExecMode, GenerationReport, Launcher, Rank, Request, Sampling, generate};

fn config(tied: bool) -> ModelConfig {
    config_of("llama", tied)
}

fn config_of(model_type: &str, tied: bool) -> ModelConfig {
    ModelConfig::from_json_str(&format!(
        r#"{{"model_type":"{model_type}","vocab_size":97,"hidden_size":32,"intermediate_size":64,"num_hidden_layers":2,
            "num_attention_heads":4,"num_key_value_heads":2,"rms_norm_eps":1e-5,"rope_theta":10000.0,
            "tie_word_embeddings":{tied}}}"#
    ))
    .unwrap()
}

fn weights(cfg: &ModelConfig) -> Arc<InMemoryWeights> {
    Arc::new(InMemoryWeights::random(&finetp_models::tensor_shapes(cfg), 12345, 0.3))
}

fn requests(n: usize, max_tokens: usize) -> Vec<Request> {
    (0..n)
        .map(|id| Request {
            id,
            prompt: (0..(3 + id * 2) as u32).map(|t| (t * 7 + id as u32 * 13) % 97).collect(),
            max_tokens: max_tokens + id % 3, // uneven lengths: ranks go idle at different steps
            sampling: Sampling::default(),
            stop_ids: vec![],
            ..Request::default()
        })
        .collect()
}

fn run(cfg: &ModelConfig, dp: usize, fg: FinegrainedTpConfig, mode: ExecMode, reqs: &[Request]) -> Result<GenerationReport, EngineError> {
    run_with(cfg, dp, fg, EngineConfig::new(mode, 64), reqs)
}

fn run_with(cfg: &ModelConfig, dp: usize, fg: FinegrainedTpConfig, engine: EngineConfig, reqs: &[Request]) -> Result<GenerationReport, EngineError> {
    let plan = Plan::new(&ParallelConfig::new(dp, 1, 1, false, fg).unwrap());
    let w = weights(cfg);
    generate(&Launcher::threads(Duration::from_secs(20)), &plan, &engine, reqs, |r: &Rank<CpuBackend>| {
        finetp_models::load(&r.be, cfg, &*w, &r.groups).map_err(|source| EngineError::Model { rank: r.rank, source })
    })
}

/// Graph mode must really have captured the decode step and replayed it on every rank (the idle
/// one included); eager mode reports no graph.
fn assert_graph_replayed(r: &GenerationReport, mode: ExecMode) {
    for rank in &r.ranks {
        match (mode, &rank.graph) {
            (ExecMode::Eager, None) => {}
            (ExecMode::Graph, Some(g)) => {
                assert_eq!(g.eager_reason, None, "rank {}: the Llama decode step must be capturable", rank.rank);
                assert!(g.captured_ops > 20, "rank {}: {} recorded calls is too few for a 2-layer decoder", rank.rank, g.captured_ops);
                assert!(g.replays >= 9, "rank {}: only {} replays for 10+ decode steps", rank.rank, g.replays);
            }
            (m, g) => panic!("rank {}: mode {m:?} reported graph {g:?}", rank.rank),
        }
    }
}

fn tokens(r: &GenerationReport) -> Vec<Vec<u32>> {
    r.outputs.iter().map(|o| o.tokens.clone()).collect()
}

#[test]
fn every_layout_and_mode_generates_the_replicated_tokens() {
    for tied in [false, true] {
        let cfg = config(tied);
        // 3 requests on 4 ranks: rank 3 is idle throughout and must still join every collective.
        let reqs = requests(3, 10);
        let reference = tokens(&run(&cfg, 4, FinegrainedTpConfig::default(), ExecMode::Eager, &reqs).unwrap());
        assert!(reference.iter().all(|t| t.len() >= 10));
        for fg in [
            FinegrainedTpConfig::uniform(2),
            FinegrainedTpConfig::uniform(4),
            FinegrainedTpConfig { embedding: Some(4), lm_head: Some(2), o_proj: Some(4), mlp: Some(2) },
            FinegrainedTpConfig { o_proj: Some(2), ..Default::default() },
        ] {
            for mode in [ExecMode::Eager, ExecMode::Graph] {
                let report = run(&cfg, 4, fg, mode, &reqs).unwrap();
                assert_eq!(tokens(&report), reference, "tied={tied} {fg:?} {mode:?}");
                assert_graph_replayed(&report, mode);
            }
        }
    }
}

/// Qwen2 (q/k/v bias) and Qwen3 (per-head q/k norm) through the same blocks.
#[test]
fn qwen_variants_generate_the_replicated_tokens() {
    for model_type in ["qwen2", "qwen3"] {
        let cfg = config_of(model_type, true);
        assert!(cfg.qkv_bias || cfg.qk_norm);
        let reqs = requests(2, 6);
        let reference = tokens(&run(&cfg, 2, FinegrainedTpConfig::default(), ExecMode::Eager, &reqs).unwrap());
        let sharded = tokens(&run(&cfg, 2, FinegrainedTpConfig::uniform(2), ExecMode::Graph, &reqs).unwrap());
        assert_eq!(sharded, reference, "{model_type}");
    }
}

#[test]
fn a_single_rank_matches_the_data_parallel_world() {
    let cfg = config(false);
    let reqs = requests(2, 6);
    let dp1 = tokens(&run(&cfg, 1, FinegrainedTpConfig::default(), ExecMode::Eager, &reqs).unwrap());
    let dp2 = tokens(&run(&cfg, 2, FinegrainedTpConfig::uniform(2), ExecMode::Graph, &reqs).unwrap());
    assert_eq!(dp1, dp2);
}

#[test]
fn measured_memory_shrinks_with_the_sizes() {
    let cfg = config(false);
    let reqs = requests(2, 2);
    let full = run(&cfg, 2, FinegrainedTpConfig::default(), ExecMode::Eager, &reqs).unwrap();
    let half = run(&cfg, 2, FinegrainedTpConfig::uniform(2), ExecMode::Eager, &reqs).unwrap();
    for (a, b) in full.ranks[0].weight_bytes.iter().zip(&half.ranks[0].weight_bytes) {
        match a.module {
            "attention (q/kv, norms)" => assert_eq!(a.bytes, b.bytes),
            "embedding" | "lm_head" => assert_eq!(a.bytes, 2 * b.bytes, "{}", a.module), // vocab 97 -> 128 rows, /2
            _ => assert_eq!(a.bytes, 2 * b.bytes, "{}", a.module),
        }
    }
}

#[test]
fn a_rank_that_fails_to_load_fails_the_run_with_its_own_error() {
    let cfg = config(false);
    let plan = Plan::new(&ParallelConfig::new(4, 1, 1, false, FinegrainedTpConfig::uniform(4)).unwrap());
    let w = weights(&cfg);
    let engine = EngineConfig::new(ExecMode::Eager, 64);
    let start = std::time::Instant::now();
    let err = generate(&Launcher::threads(Duration::from_secs(30)), &plan, &engine, &requests(4, 4), |r: &Rank<CpuBackend>| {
        if r.rank == 2 {
            return Err(EngineError::Model { rank: 2, source: ModelError::Config("simulated: out of memory".into()) });
        }
        finetp_models::load(&r.be, &cfg, &*w, &r.groups).map_err(|source| EngineError::Model { rank: r.rank, source })
    })
    .unwrap_err();
    assert!(err.to_string().contains("rank 2") && err.to_string().contains("simulated"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(10), "peers must learn of the failure, not wait for the 30 s timeout");
}

#[test]
fn a_rank_that_fails_fails_its_waiting_peers_at_once_and_the_run_reports_its_error() {
    let plan = Plan::new(&ParallelConfig::new(2, 1, 1, false, FinegrainedTpConfig::uniform(2)).unwrap());
    let start = std::time::Instant::now();
    // Rank 0 waits in a collective for rank 1, which fails instead: its thread ends and its
    // communicators go, so rank 0's wait ends at once (not after the 60 s timeout) with a peer
    // failure, and the launcher reports rank 1's own error, not rank 0's echo of it.
    let err = Launcher::threads(Duration::from_secs(60))
        .run(&plan, |r: Rank<CpuBackend>| {
            if r.rank == 1 {
                return Err(EngineError::Config("rank 1 gives up".into()));
            }
            r.groups.dp.barrier().map_err(|source| EngineError::Comm { rank: 0, source })
        })
        .unwrap_err();
    assert!(err.to_string().contains("rank 1 gives up"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(10), "rank 0 waited {:?}", start.elapsed());
}

#[test]
fn max_tokens_0_generates_nothing_and_sampling_is_seeded_per_request() {
    let cfg = config(false);
    let mut reqs = requests(3, 8);
    reqs[1].max_tokens = 0;
    let r = run(&cfg, 2, FinegrainedTpConfig::uniform(2), ExecMode::Eager, &reqs).unwrap();
    assert!(r.outputs[1].tokens.is_empty(), "{:?}", r.outputs[1]);
    // Sampled (temperature 1, top-p 0.9): reproducible for a seed, on any layout, and not greedy.
    for q in &mut reqs {
        q.max_tokens = 8;
        q.sampling = Sampling { temperature: 1.0, top_p: 0.9, top_k: 0, seed: 42 };
    }
    let a = tokens(&run(&cfg, 2, FinegrainedTpConfig::uniform(2), ExecMode::Eager, &reqs).unwrap());
    let b = tokens(&run(&cfg, 1, FinegrainedTpConfig::default(), ExecMode::Graph, &reqs).unwrap());
    assert_eq!(a, b, "a seeded request samples the same tokens on another layout and mode");
    for q in &mut reqs {
        q.sampling.temperature = 0.0;
    }
    assert_ne!(tokens(&run(&cfg, 1, FinegrainedTpConfig::default(), ExecMode::Eager, &reqs).unwrap()), a, "sampling is not greedy");
}

#[test]
fn bad_requests_are_rejected_before_any_work() {
    let cfg = config(false);
    let mut reqs = requests(1, 4);
    reqs[0].max_tokens = 1000;
    let err = run(&cfg, 1, FinegrainedTpConfig::default(), ExecMode::Eager, &reqs).unwrap_err();
    assert!(err.to_string().contains("exceeds the maximum sequence length"), "{err}");
    // A count that would overflow the sum is refused the same way, not wrapped or panicked on.
    reqs[0].max_tokens = usize::MAX;
    let err = run(&cfg, 1, FinegrainedTpConfig::default(), ExecMode::Eager, &reqs).unwrap_err();
    assert!(err.to_string().contains("exceeds the maximum sequence length"), "{err}");
    reqs[0].prompt.clear();
    reqs[0].max_tokens = 1;
    assert!(run(&cfg, 1, FinegrainedTpConfig::default(), ExecMode::Eager, &reqs).unwrap_err().to_string().contains("empty prompt"));
}

/// Chunked prefill: with a step budget of 1, 3 or 5 token rows, prompts of 3 to 41 tokens are
/// prefilled over many steps, interleaved with the decoding of the sequences that finished
/// theirs, and every token, sampled or greedy, equals the one-step prefill's; the step count
/// shows the chunking happened.
#[test]
fn chunked_prefill_generates_the_tokens_of_a_whole_prefill() {
    let cfg = config(false);
    let mut reqs = requests(4, 6);
    reqs[3].prompt = (0..41).map(|t| (t * 11 + 5) % 97).collect();
    reqs[1].sampling = Sampling { temperature: 0.8, top_k: 20, top_p: 0.9, seed: 7 };
    let fg = FinegrainedTpConfig::uniform(2);
    let whole = run(&cfg, 2, fg, ExecMode::Eager, &reqs).unwrap();
    for budget in [1, 3, 5] {
        for mode in [ExecMode::Eager, ExecMode::Graph] {
            let engine = EngineConfig { max_num_batched_tokens: budget, ..EngineConfig::new(mode, 64) };
            let chunked = run_with(&cfg, 2, fg, engine, &reqs).unwrap();
            assert_eq!(tokens(&chunked), tokens(&whole), "budget {budget}, {mode:?}");
            let steps = |r: &GenerationReport| r.ranks.iter().map(|k| k.steps).max().unwrap();
            assert!(steps(&chunked) > steps(&whole) + 41 / budget / 2, "budget {budget}: {} steps against {}", steps(&chunked), steps(&whole));
        }
    }
    let zero = EngineConfig { max_num_batched_tokens: 0, ..EngineConfig::new(ExecMode::Eager, 64) };
    assert!(matches!(run_with(&cfg, 2, fg, zero, &reqs), Err(EngineError::Config(_))));
}
