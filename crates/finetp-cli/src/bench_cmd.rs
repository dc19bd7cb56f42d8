//! `finetp bench`: each component's decode-step forward, sharded vs replicated, and the
//! collectives alone, measured side by side in one run on the selected backend.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::anyhow;
use clap::Args;
use finetp_backend_cpu::CpuBackend;
use finetp_backend_cpu::comm::Fabric;
use finetp_core::config::{Component, ModelConfig};
use finetp_core::parallel::GroupSet;
use finetp_core::plan::Plan;
use finetp_engine::bench::{BenchConfig, CollectiveTiming, ComponentTiming, time_collectives, time_component};
use finetp_engine::{DEFAULT_TIMEOUT, EngineError};

use crate::Failure;
use crate::args::ParallelArgs;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub parallel: ParallelArgs,
    /// Model directory or config.json whose shapes are benchmarked (weights are random).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Tokens per rank per decode step.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    #[arg(long, default_value_t = 15)]
    pub repeats: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Opens one rank's device and communicators.
type RankSetup = Box<dyn Fn(usize) -> Result<(CpuBackend, GroupSet<CpuBackend>), EngineError> + Sync>;

/// The CPU backend's per-plan rank setup: one fabric per plan, one pool per rank.
pub fn cpu_opener(dp: usize) -> impl Fn(&Plan) -> RankSetup {
    move |plan: &Plan| {
        let fabric = Arc::new(Fabric::new(plan, DEFAULT_TIMEOUT));
        let threads = CpuBackend::threads_per_rank(dp);
        Box::new(move |rank| {
            let be = CpuBackend::new(threads).map_err(|e| EngineError::Setup { rank, message: e.to_string() })?;
            let g = fabric.connect(rank).map_err(|e| EngineError::Setup { rank, message: e.to_string() })?;
            Ok((be, g))
        })
    }
}

/// Measurements of one `finetp bench` run.
#[derive(serde::Serialize)]
pub struct BenchReport {
    pub batch_per_rank: usize,
    pub data_parallel_size: usize,
    /// Replicated then sharded timing per component (one layer for o_proj/MLP).
    pub components: Vec<(ComponentTiming, ComponentTiming)>,
    pub collectives: Vec<CollectiveTiming>,
}

pub fn measure(model: &ModelConfig, dp: usize, sizes: &[(Component, usize)], cfg: &BenchConfig) -> Result<BenchReport, anyhow::Error> {
    let open = cpu_opener(dp);
    let mut components = Vec::new();
    for &(c, size) in sizes {
        eprintln!("bench: {c} replicated vs size {size} ...");
        let rep = time_component(cfg, model, c, 1, &open)?;
        let sh = time_component(cfg, model, c, size, &open)?;
        components.push((rep, sh));
    }
    let mut collectives = Vec::new();
    let group_sizes: Vec<usize> = {
        let mut v: Vec<usize> = sizes.iter().map(|s| s.1).filter(|&s| s > 1).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    for &p in &group_sizes {
        for kib in [4usize, 64, 1024, 8192] {
            eprintln!("bench: collectives, group {p}, {kib} KiB per member ...");
            collectives.extend(time_collectives(cfg, p, kib * 1024, cpu_opener(p))?);
        }
    }
    Ok(BenchReport { batch_per_rank: cfg.batch_per_rank, data_parallel_size: dp, components, collectives })
}

pub fn run(args: &BenchArgs) -> Result<(), Failure> {
    let parallel = args.parallel.to_config()?;
    let model = match &args.model {
        Some(p) => crate::plan_cmd::load_model(Some(p), &parallel)?.ok_or_else(|| Failure::Input(anyhow!("no model")))?,
        None => smollm2_config(),
    };
    model.validate_parallel(&parallel).map_err(|e| Failure::Input(e.into()))?;
    let dp = parallel.data_parallel_size;
    let sizes: Vec<(Component, usize)> = Component::ALL.iter().map(|&c| (c, parallel.size(c))).filter(|(_, s)| *s > 1).collect();
    if sizes.is_empty() {
        return Err(Failure::Input(anyhow!("give at least one fine-grained size > 1 in --additional-config to compare against replicated")));
    }
    let cfg = BenchConfig { data_parallel_size: dp, batch_per_rank: args.batch_size, warmup: args.warmup, repeats: args.repeats };
    let report = measure(&model, dp, &sizes, &cfg)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("Decode-step forward per call on rank 0 (median of {}, batch {} per rank, DP {dp}, CPU backend):", args.repeats, args.batch_size);
    println!("{:<10} {:>5} {:>14} {:>14} {:>12} {:>12}", "component", "size", "replicated ms", "sharded ms", "ratio", "shard MiB");
    for (rep, sh) in &report.components {
        println!(
            "{:<10} {:>5} {:>14.3} {:>14.3} {:>12.2} {:>12.2}",
            rep.component.name(),
            sh.size,
            rep.median_s * 1e3,
            sh.median_s * 1e3,
            sh.median_s / rep.median_s,
            sh.weight_bytes as f64 / (1u64 << 20) as f64
        );
    }
    println!("\nCollectives alone (median per call):");
    println!("{:<16} {:>6} {:>14} {:>12} {:>10}", "op", "group", "bytes/member", "us", "GB/s");
    for c in &report.collectives {
        println!(
            "{:<16} {:>6} {:>14} {:>12.1} {:>10.2}",
            c.op,
            c.group_size,
            c.bytes_per_member,
            c.median_s * 1e6,
            c.bytes_per_member as f64 * (c.group_size as f64 - 1.0) / c.median_s / 1e9
        );
    }
    Ok(())
}

/// SmolLM2-135M's shapes (the default model), so `finetp bench` needs no download.
pub fn smollm2_config() -> ModelConfig {
    ModelConfig::from_json_str(
        r#"{"model_type":"llama","vocab_size":49152,"hidden_size":576,"intermediate_size":1536,"num_hidden_layers":30,
            "num_attention_heads":9,"num_key_value_heads":3,"tie_word_embeddings":true,"rope_theta":100000,"rms_norm_eps":1e-5}"#,
    )
    .expect("built-in SmolLM2 config parses")
}
