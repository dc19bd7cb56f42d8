//! `finetp bench`: each component's decode-step forward, sharded vs replicated, and the
//! collectives alone, measured side by side in one run on the selected backend.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::anyhow;
use clap::Args;
use finetp_backend_cpu::CpuBackend;
use finetp_backend_cpu::comm::Fabric;
use finetp_core::backend::DType;
use finetp_core::config::{Component, ModelConfig};
use finetp_core::cost::{HardwareProfile, component_times};
use finetp_core::memory::{Quantization, WeightFormat};
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
    /// Fit memory bandwidth and collective α/β from this run and write them as a hardware
    /// profile (TOML) to this path; then print the calibrated model's predictions next to the
    /// measurements.
    #[arg(long, value_name = "PROFILE.toml")]
    pub calibrate: Option<PathBuf>,
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
    print_report(&report, args);
    if let Some(path) = &args.calibrate {
        let profile = calibrate(&report, &model)?;
        std::fs::write(path, format!("# Written by `finetp bench --calibrate` from one run on this machine.\n{}", profile.to_toml()))
            .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
        println!("\nCalibrated profile written to {}:\n{}", path.display(), profile.to_toml());
        print_predictions(&report, &model, &profile);
    }
    Ok(())
}

fn print_report(report: &BenchReport, args: &BenchArgs) {
    let dp = report.data_parallel_size;
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
}

/// Fits the profile from this run. Collectives: α is the median time at the smallest message,
/// the bus bandwidth comes from the largest message of at most 1 MiB per member (decode-sized;
/// larger ones are dominated by cache effects on a CPU). GEMMs: `t − comm = bytes/bw + flops/peak`
/// fitted by least squares on relative error (two unknowns, no intercept) over every component
/// measured.
fn calibrate(r: &BenchReport, model: &ModelConfig) -> anyhow::Result<HardwareProfile> {
    let mut p = HardwareProfile::builtin("cpu-local")?;
    p.activation_bytes = 4;
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    let min_bytes = r.collectives.iter().map(|c| c.bytes_per_member).min().unwrap_or(0);
    if let Some(alpha) = median(&mut r.collectives.iter().filter(|c| c.bytes_per_member == min_bytes).map(|c| c.median_s).collect()) {
        p.collective_alpha_us = alpha * 1e6;
    }
    let big = r.collectives.iter().map(|c| c.bytes_per_member).filter(|&b| b <= 1 << 20).max().unwrap_or(0);
    let bws: Vec<f64> = r
        .collectives
        .iter()
        .filter(|c| c.bytes_per_member == big && c.median_s > p.collective_alpha_us * 1e-6)
        .map(|c| (c.group_size as f64 - 1.0) * c.bytes_per_member as f64 / (c.median_s - p.collective_alpha_us * 1e-6) / 1e9)
        .collect();
    if let Some(bw) = median(&mut bws.clone()) {
        p.collective_bus_bandwidth_gbps = bw;
    }
    (p.inter_node_alpha_us, p.inter_node_bus_bandwidth_gbps) = (p.collective_alpha_us, p.collective_bus_bandwidth_gbps);
    // GEMM terms per call: bytes and flops of one layer's shard, measured time minus comm.
    let f = WeightFormat { dtype: DType::F32, quantization: Quantization::None };
    let (mut sbb, mut sbf, mut sff, mut sbt, mut sft) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for t in r.components.iter().flat_map(|(a, b)| [a, b]).filter(|t| t.component != Component::Embedding) {
        let (_, comm, _) = component_times(t.component, t.size, model, &f, r.batch_per_rank, &p);
        let y = t.median_s - comm / layers(t.component, model);
        // Weighted by 1/t²: relative errors count, so the big lm_head does not drown the rest.
        let w = 1.0 / (t.median_s * t.median_s);
        let (b, fl) = (t.weight_bytes as f64, gemm_flops(t.component, model, r.batch_per_rank));
        (sbb, sbf, sff, sbt, sft) = (sbb + w * b * b, sbf + w * b * fl, sff + w * fl * fl, sbt + w * b * y, sft + w * fl * y);
    }
    let det = sbb * sff - sbf * sbf;
    if det > 0.0 {
        let (a, b) = ((sbt * sff - sft * sbf) / det, (sft * sbb - sbt * sbf) / det);
        if a > 0.0 {
            p.memory_bandwidth_gbps = 1.0 / a / 1e9;
        }
        if b > 0.0 {
            p.compute_tflops = 1.0 / b / 1e12;
            p.compute_tops_int8 = p.compute_tflops;
        }
    }
    Ok(p)
}

/// Layers a component's step spans (its per-call time is the step time over this).
fn layers(c: Component, m: &ModelConfig) -> f64 {
    match c {
        Component::OProj => m.num_hidden_layers as f64,
        Component::Mlp => m.dense_mlp_layers() as f64,
        _ => 1.0,
    }
}

/// FLOPs of one call of a component's GEMMs for one rank's batch (the same at every size).
fn gemm_flops(c: Component, m: &ModelConfig, batch: usize) -> f64 {
    let (b, h) = (batch as f64, m.hidden_size as f64);
    match c {
        Component::Embedding => 0.0,
        Component::LmHead => 2.0 * b * m.padded_vocab() as f64 * h,
        Component::OProj => 2.0 * b * m.o_proj_in_features() as f64 * h,
        Component::Mlp => 6.0 * b * h * m.intermediate_size as f64,
    }
}

/// The calibrated model's per-call time of each component next to the measurement.
fn print_predictions(r: &BenchReport, model: &ModelConfig, hw: &HardwareProfile) {
    let f = WeightFormat { dtype: DType::F32, quantization: Quantization::None };
    println!("Predicted vs measured per call (one layer for o_proj/MLP):");
    println!("{:<10} {:>5} {:>13} {:>13} {:>8}", "component", "size", "predicted ms", "measured ms", "error");
    for (rep, sh) in &r.components {
        for t in [rep, sh] {
            let (g, c, _) = component_times(t.component, t.size, model, &f, r.batch_per_rank, hw);
            let pred = (g + c) / layers(t.component, model);
            println!(
                "{:<10} {:>5} {:>13.3} {:>13.3} {:>+7.0}%",
                t.component.name(),
                t.size,
                pred * 1e3,
                t.median_s * 1e3,
                (pred / t.median_s - 1.0) * 100.0
            );
        }
    }
}

/// SmolLM2-135M's shapes (the default model), so `finetp bench` needs no download.
pub fn smollm2_config() -> ModelConfig {
    ModelConfig::from_json_str(
        r#"{"model_type":"llama","vocab_size":49152,"hidden_size":576,"intermediate_size":1536,"num_hidden_layers":30,
            "num_attention_heads":9,"num_key_value_heads":3,"tie_word_embeddings":true,"rope_theta":100000,"rms_norm_eps":1e-5}"#,
    )
    .expect("built-in SmolLM2 config parses")
}
