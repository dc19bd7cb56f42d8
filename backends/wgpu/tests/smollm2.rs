//! SmolLM2-135M-Instruct end to end on wgpu: DP 2 with every fine-grained component at size 2
//! (embedding, lm_head, o_proj and MLP sharded over both ranks, every collective staged
//! through the host), greedy, 32 tokens per request: exactly the CPU backend's tokens under
//! the same plan.
//!
//! The model is the default one (`finetp_loader::default_model()`, fetched once with pip).
//! `FINETP_SKIP_MODEL_TESTS=1` skips with a printed reason, and so does a machine without a
//! wgpu adapter (unless `FINETP_REQUIRE_WGPU=1`).

mod common;

use std::sync::Arc;
use std::time::Instant;

use finetp_backend_cpu::CpuBackend;
use finetp_backend_cpu::comm::Fabric;
use finetp_backend_wgpu::{WgpuBackend, staged_groups};
use finetp_core::backend::{Backend, Device};
use finetp_core::config::{FinegrainedTpConfig, ParallelConfig};
use finetp_core::decoder::CausalLm;
use finetp_core::parallel::GroupSet;
use finetp_core::plan::Plan;
use finetp_engine::{DEFAULT_TIMEOUT, EngineConfig, EngineError, ExecMode, Request, Sampling};
use finetp_loader::Checkpoint;
use finetp_model_llama::Llama;

const MAX_TOKENS: usize = 32;
const DP: usize = 2;
const PROMPTS: [&str; 4] = [
    "What is the capital of France?",
    "Write one sentence about the ocean.",
    "Name three primary colors.",
    "Why is the sky blue?",
];

fn checkpoint() -> Option<Checkpoint> {
    if std::env::var_os("FINETP_SKIP_MODEL_TESTS").is_some() {
        eprintln!("SKIPPED smollm2 wgpu test: FINETP_SKIP_MODEL_TESTS is set");
        return None;
    }
    let path = finetp_loader::default_model().expect("fetch the default model (set FINETP_SKIP_MODEL_TESTS=1 to skip)");
    Some(Checkpoint::open(&path).expect("open the default model"))
}

fn requests(ckpt: &Checkpoint) -> Vec<Request> {
    let tok = ckpt.tokenizer.as_ref().expect("the default model has a tokenizer");
    PROMPTS
        .iter()
        .enumerate()
        .map(|(id, p)| {
            let text = format!("<|im_start|>user\n{p}<|im_end|>\n<|im_start|>assistant\n");
            let prompt = tok.encode(text.as_str(), false).expect("tokenize").get_ids().to_vec();
            // No stop ids: every request generates exactly MAX_TOKENS tokens.
            Request { id, prompt, max_tokens: MAX_TOKENS, sampling: Sampling { temperature: 0.0, top_p: 1.0, seed: 0 }, stop_ids: vec![] }
        })
        .collect()
}

fn plan() -> Plan {
    let ft = FinegrainedTpConfig { embedding: Some(2), lm_head: Some(2), o_proj: Some(2), mlp: Some(2) };
    Plan::new(&ParallelConfig::new(DP, 1, 1, false, ft).expect("valid layout"))
}

/// Greedy tokens of every request on backend `B`, opened per rank by `open`.
fn generate<B: Device>(ckpt: &Checkpoint, open: impl Fn(usize) -> B + Sync, wrap: impl Fn(&B, GroupSet<CpuBackend>) -> GroupSet<B> + Sync) -> Vec<Vec<u32>> {
    let reqs = requests(ckpt);
    let max_seq_len = reqs.iter().map(|r| r.prompt.len()).max().unwrap_or(0) + MAX_TOKENS;
    let cfg = EngineConfig { data_parallel_size: DP, ranks_per_replica: 1, mode: ExecMode::Eager, max_seq_len };
    let fabric = Arc::new(Fabric::new(&plan(), DEFAULT_TIMEOUT));
    let t0 = Instant::now();
    let report = finetp_engine::generate(
        &cfg,
        &reqs,
        |rank| {
            let be = open(rank);
            let groups = fabric.connect(rank).map_err(|e| EngineError::Setup { rank, message: e.to_string() })?;
            let groups = wrap(&be, groups);
            Ok((be, groups))
        },
        |rank, be, groups| {
            let m = Llama::load(be, &ckpt.config, &*ckpt.weights, groups).map_err(|source| EngineError::Model { rank, source })?;
            Ok(Box::new(m) as Box<dyn CausalLm<B>>)
        },
    )
    .expect("generation");
    eprintln!("{}: {:.1} s, TPOT {:?}", B::NAME, t0.elapsed().as_secs_f64(), report.tpot_s());
    report.outputs.into_iter().map(|o| o.tokens).collect()
}

#[test]
fn dp2_all_components_at_size_2_gives_the_cpu_backends_greedy_tokens() {
    let Some(ckpt) = checkpoint() else { return };
    if common::backend().is_none() {
        return;
    }
    let threads = CpuBackend::threads_per_rank(DP);
    let cpu = generate(&ckpt, |_| CpuBackend::new(threads).expect("cpu"), |_, g| g);
    let wgpu = generate(&ckpt, |_| WgpuBackend::new().expect("wgpu adapter"), staged_groups);
    assert_eq!(cpu.len(), PROMPTS.len());
    for (i, (c, w)) in cpu.iter().zip(&wgpu).enumerate() {
        assert_eq!(c.len(), MAX_TOKENS, "request {i}: CPU generated {} tokens", c.len());
        let first = c.iter().zip(w).position(|(a, b)| a != b);
        assert_eq!(w, c, "request {i}: wgpu tokens differ from the CPU backend's (first at index {first:?})");
    }
    let be = WgpuBackend::new().expect("wgpu");
    eprintln!("matched on {}", be.describe());
}
