//! Shared pieces of the examples: the backend from `--backend` (any this build has: add
//! `--features wgpu` to the cargo command for wgpu), random checkpoints written as real
//! `config.json` + `model.safetensors`, and generation through the engine's one launcher and
//! the model registry — the same path `finetp run` takes.

use std::path::Path;
use std::sync::Arc;

use finetp_core::backend::Device;
use finetp_core::config::{FinegrainedTpConfig, ModelConfig, ParallelConfig};
use finetp_core::plan::Plan;
use finetp_core::shard::{InMemoryWeights, WeightSource};
use finetp_engine::{BackendKind, EngineConfig, EngineError, ExecMode, GenerationReport, Launcher, Rank, Request, Sampling, WithBackend};

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The backend `--backend <name>` names (default: cpu).
pub fn backend_from_args() -> Result<BackendKind, Error> {
    let args: Vec<String> = std::env::args().collect();
    let Some(i) = args.iter().position(|a| a == "--backend") else { return Ok(BackendKind::Cpu) };
    let name = args.get(i + 1).ok_or("--backend needs a value")?;
    BackendKind::ALL.into_iter().find(|k| k.name() == name).ok_or_else(|| format!("unknown backend {name}").into())
}

/// Writes `config.json` and a `model.safetensors` of random f32 weights for every tensor the
/// model of `config_json` reads.
pub fn write_random_checkpoint(dir: &Path, config_json: &str, seed: u64) -> Result<(), Error> {
    let cfg = ModelConfig::from_json_str(config_json)?;
    std::fs::write(dir.join("config.json"), config_json)?;
    let w = InMemoryWeights::random(&finetp_models::tensor_shapes(&cfg), seed, 0.3);
    finetp_testkit::tiny::write_safetensors(&dir.join("model.safetensors"), &w)?;
    Ok(())
}

/// One greedy generation run.
pub struct Generation<'a> {
    pub config: &'a ModelConfig,
    pub weights: Arc<dyn WeightSource + Send + Sync>,
    pub dp: usize,
    pub sizes: FinegrainedTpConfig,
    pub mode: ExecMode,
    pub prompts: &'a [Vec<u32>],
    pub max_tokens: usize,
    pub stop_ids: &'a [u32],
}

impl WithBackend for &Generation<'_> {
    type Output = Result<GenerationReport, Error>;

    fn run<B: Device>(self, _kind: BackendKind) -> Self::Output {
        let plan = Plan::new(&ParallelConfig::new(self.dp, 1, 1, false, self.sizes)?);
        let requests: Vec<Request> = self
            .prompts
            .iter()
            .enumerate()
            .map(|(id, p)| Request { id, prompt: p.clone(), max_tokens: self.max_tokens, sampling: Sampling::default(), stop_ids: self.stop_ids.to_vec(), ..Request::default() })
            .collect();
        let max_seq_len = self.prompts.iter().map(Vec::len).max().unwrap_or(0) + self.max_tokens;
        let cfg = EngineConfig::new(self.mode, max_seq_len);
        Ok(finetp_engine::generate(&Launcher::default(), &plan, &cfg, &requests, |r: &Rank<B>| {
            finetp_models::load(&r.be, self.config, &*self.weights, &r.groups).map_err(|source| EngineError::Model { rank: r.rank, source })
        })?)
    }
}

impl Generation<'_> {
    /// Runs on `backend`.
    pub fn run_on(&self, backend: BackendKind) -> Result<GenerationReport, Error> {
        finetp_engine::dispatch(backend, self)?
    }
}

/// Runs a checkpoint replicated and sharded (`sizes` over `dp` ranks), eager and graph, on
/// `backend`; prints the tokens and the per-rank memory, and fails if any sharded run differs
/// from the replicated one.
pub fn compare_layouts(backend: BackendKind, config: &ModelConfig, weights: Arc<dyn WeightSource + Send + Sync>, dp: usize, sizes: FinegrainedTpConfig) -> Result<(), Error> {
    let vocab = config.vocab_size as u32;
    let prompts: Vec<Vec<u32>> = (0..dp as u32).map(|r| (0..5 + r).map(|t| (t * 31 + r * 7) % vocab).collect()).collect();
    let run = |sizes, mode| Generation { config, weights: weights.clone(), dp, sizes, mode, prompts: &prompts, max_tokens: 12, stop_ids: &[] }.run_on(backend);
    let reference = run(FinegrainedTpConfig::default(), ExecMode::Eager)?;
    for mode in [ExecMode::Eager, ExecMode::Graph] {
        let report = run(sizes, mode)?;
        for (a, b) in report.outputs.iter().zip(&reference.outputs) {
            if a.tokens != b.tokens {
                return Err(format!("request {}: {mode:?} sharded tokens {:?} differ from replicated {:?}", a.id, a.tokens, b.tokens).into());
            }
        }
        println!("{mode:?} on {backend}: sharded tokens equal the replicated run's ({} requests)", report.outputs.len());
        if mode == ExecMode::Eager {
            for o in &report.outputs {
                println!("  request {} on rank {}: {:?}", o.id, o.rank, o.tokens);
            }
            for (rep, sh) in reference.ranks.iter().zip(&report.ranks).take(1) {
                println!("  rank {} weight bytes, replicated -> sharded:", sh.rank);
                for (a, b) in rep.weight_bytes.iter().zip(&sh.weight_bytes) {
                    println!("    {:<24} {:>10} -> {:>10}", a.module, a.bytes, b.bytes);
                }
            }
        }
    }
    Ok(())
}
