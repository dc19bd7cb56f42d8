//! Shared pieces of the examples: writing a random checkpoint as real `config.json` +
//! `model.safetensors`, and running it through the engine on CPU ranks.

use std::path::Path;
use std::sync::Arc;

use finetp_backend_cpu::CpuBackend;
use finetp_backend_cpu::comm::Fabric;
use finetp_core::config::{FinegrainedTpConfig, ParallelConfig};
use finetp_core::decoder::CausalLm;
use finetp_core::parallel::GroupSet;
use finetp_core::plan::Plan;
use finetp_core::shard::InMemoryWeights;
use finetp_engine::{DEFAULT_TIMEOUT, EngineConfig, EngineError, ExecMode, GenerationReport, Request, Sampling};
use finetp_loader::Checkpoint;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Writes `config.json` and a `model.safetensors` of random f32 weights with the given shapes.
pub fn write_random_checkpoint(dir: &Path, config_json: &str, shapes: &[(String, Vec<usize>)], seed: u64) -> Result<(), Error> {
    std::fs::write(dir.join("config.json"), config_json)?;
    let w = InMemoryWeights::random(shapes, seed, 0.3);
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = w
        .tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.to_f32_vec().unwrap_or_default().iter().flat_map(|x| x.to_le_bytes()).collect(), t.shape.clone()))
        .collect();
    let views = bytes
        .iter()
        .map(|(n, b, s)| Ok((n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors"))?;
    Ok(())
}

/// Loads a model for one rank from the checkpoint.
pub type Loader<'a> = dyn Fn(usize, &CpuBackend, &GroupSet<CpuBackend>) -> Result<Box<dyn CausalLm<CpuBackend>>, EngineError> + Sync + 'a;

/// Greedy generation of `prompts` (token ids) on `dp` CPU ranks with the given sizes; a
/// request stops after `max_tokens` or any of `stop_ids`.
#[allow(clippy::too_many_arguments)]
pub fn generate(
    dp: usize,
    sizes: FinegrainedTpConfig,
    mode: ExecMode,
    prompts: &[Vec<u32>],
    max_tokens: usize,
    stop_ids: &[u32],
    load: &Loader<'_>,
) -> Result<GenerationReport, Error> {
    let plan = Plan::new(&ParallelConfig::new(dp, 1, 1, false, sizes)?);
    let fabric = Arc::new(Fabric::new(&plan, DEFAULT_TIMEOUT));
    let requests: Vec<Request> = prompts
        .iter()
        .enumerate()
        .map(|(id, p)| Request { id, prompt: p.clone(), max_tokens, sampling: Sampling::default(), stop_ids: stop_ids.to_vec() })
        .collect();
    let max_seq_len = prompts.iter().map(Vec::len).max().unwrap_or(0) + max_tokens;
    let cfg = EngineConfig { data_parallel_size: dp, ranks_per_replica: 1, mode, max_seq_len };
    let threads = CpuBackend::threads_per_rank(dp);
    Ok(finetp_engine::generate(
        &cfg,
        &requests,
        |rank| {
            let be = CpuBackend::new(threads).map_err(|e| EngineError::Setup { rank, message: e.to_string() })?;
            Ok((be, fabric.connect(rank).map_err(|e| EngineError::Setup { rank, message: e.to_string() })?))
        },
        load,
    )?)
}

/// Runs a random checkpoint replicated and sharded, eager and graph, prints the tokens and the
/// per-rank memory, and fails if any sharded run differs from the replicated one.
pub fn compare_layouts(ckpt: &Checkpoint, dp: usize, sizes: FinegrainedTpConfig, load: &Loader<'_>) -> Result<(), Error> {
    let vocab = ckpt.config.vocab_size as u32;
    let prompts: Vec<Vec<u32>> = (0..dp as u32).map(|r| (0..5 + r).map(|t| (t * 31 + r * 7) % vocab).collect()).collect();
    let reference = generate(dp, FinegrainedTpConfig::default(), ExecMode::Eager, &prompts, 12, &[], load)?;
    for mode in [ExecMode::Eager, ExecMode::Graph] {
        let run = generate(dp, sizes, mode, &prompts, 12, &[], load)?;
        for (a, b) in run.outputs.iter().zip(&reference.outputs) {
            if a.tokens != b.tokens {
                return Err(format!("request {}: {mode:?} sharded tokens {:?} differ from replicated {:?}", a.id, a.tokens, b.tokens).into());
            }
        }
        println!("{mode:?}: sharded tokens equal the replicated run's ({} requests)", run.outputs.len());
        if mode == ExecMode::Eager {
            for o in &run.outputs {
                println!("  request {} on rank {}: {:?}", o.id, o.rank, o.tokens);
            }
            for (rep, sh) in reference.ranks.iter().zip(&run.ranks).take(1) {
                println!("  rank {} weight bytes, replicated -> sharded:", sh.rank);
                for (a, b) in rep.weight_bytes.iter().zip(&sh.weight_bytes) {
                    println!("    {:<24} {:>10} -> {:>10}", a.module, a.bytes, b.bytes);
                }
            }
        }
    }
    Ok(())
}
