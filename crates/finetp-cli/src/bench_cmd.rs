//! `finetp bench`: each component's decode-step forward, sharded vs replicated, and the
//! collectives alone, measured side by side in one run on the selected backend.

use std::path::PathBuf;

use anyhow::anyhow;
use clap::Args;
use finetp_backend_cpu::CpuBackend;
use finetp_backend_cpu::comm::Fabric;
use finetp_core::backend::{BackendError, DType, Device};
use finetp_core::config::{Component, ModelConfig};
use finetp_core::cost::{HardwareProfile, component_times};
use finetp_core::memory::{Quantization, WeightFormat};
use finetp_core::parallel::GroupSet;
use finetp_core::plan::Plan;
use finetp_engine::bench::{BenchConfig, CollectiveTiming, ComponentTiming, GemmTiming, time_collectives, time_component, time_gemm};
use finetp_engine::{DEFAULT_TIMEOUT, EngineError};

use crate::Failure;
use crate::args::ParallelArgs;
use crate::run_cmd::BackendArg;

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
    /// Backend to measure (the CPU is always built; others need their cargo feature).
    #[arg(long, value_enum, default_value_t = BackendArg::Cpu)]
    pub backend: BackendArg,
    /// Fit memory bandwidth, GEMM compute rate and collective α/β from this run's probes and
    /// write them as a hardware profile (TOML) to this path; then print the calibrated model's
    /// predictions of every component next to its measured time.
    #[arg(long, value_name = "PROFILE.toml")]
    pub calibrate: Option<PathBuf>,
}

/// How a backend's ranks are opened: a device per rank, and the in-process fabric's CPU
/// communicators adapted to it (the identity for the CPU; staging through the host for wgpu).
pub struct Ranks<B: Device> {
    open: Box<dyn Fn() -> Result<B, BackendError> + Sync>,
    wrap: fn(&B, GroupSet<CpuBackend>) -> GroupSet<B>,
}

impl<B: Device> Ranks<B> {
    /// Rank setup for one plan: one fabric per plan, shared by its ranks.
    fn setup<'a>(&'a self, plan: &Plan) -> impl Fn(usize) -> Result<(B, GroupSet<B>), EngineError> + Sync + use<'a, B> {
        let fabric = Fabric::new(plan, DEFAULT_TIMEOUT);
        move |rank| {
            let be = (self.open)().map_err(|e| EngineError::Setup { rank, message: e.to_string() })?;
            let g = fabric.connect(rank).map_err(|e| EngineError::Setup { rank, message: e.to_string() })?;
            let g = (self.wrap)(&be, g);
            Ok((be, g))
        }
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
    /// GEMM probes on every rank at once, at the batch sizes the components run (this rank's
    /// tokens, and the largest group's): streaming cold weights from memory, and on
    /// cache-resident weights (compute).
    pub gemms: Vec<GemmTiming>,
}

pub fn measure<B: Device>(model: &ModelConfig, sizes: &[(Component, usize)], cfg: &BenchConfig, ranks: &Ranks<B>) -> Result<BenchReport, anyhow::Error> {
    let (dp, open) = (cfg.data_parallel_size, |plan: &Plan| ranks.setup(plan));
    let mut components = Vec::new();
    for &(c, size) in sizes {
        eprintln!("bench: {c} replicated vs size {size} ...");
        let rep = time_component(cfg, model, c, 1, open)?;
        let sh = time_component(cfg, model, c, size, open)?;
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
            collectives.extend(time_collectives(cfg, p, kib * 1024, open)?);
        }
    }
    let (h, b, pmax) = (model.hidden_size, cfg.batch_per_rank, group_sizes.iter().copied().max().unwrap_or(1));
    eprintln!("bench: GEMM probes (memory and compute) on {dp} ranks at once ...");
    let mut gemms = Vec::new();
    for m in [b, pmax * b] {
        gemms.push(time_gemm(cfg, (8192, h), m, true, open)?);
        gemms.push(time_gemm(cfg, (64, h), m, false, open)?);
    }
    Ok(BenchReport { batch_per_rank: cfg.batch_per_rank, data_parallel_size: dp, components, collectives, gemms })
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
    if !args.backend.compiled() {
        return Err(args.backend.not_compiled());
    }
    let report = match args.backend {
        BackendArg::Cpu => {
            let threads = CpuBackend::threads_per_rank(dp);
            measure(&model, &sizes, &cfg, &Ranks { open: Box::new(move || CpuBackend::new(threads)), wrap: |_, g| g })?
        }
        #[cfg(feature = "wgpu")]
        BackendArg::Wgpu => {
            measure(&model, &sizes, &cfg, &Ranks { open: Box::new(finetp_backend_wgpu::WgpuBackend::new), wrap: finetp_backend_wgpu::staged_groups })?
        }
        other => return Err(other.not_compiled()),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    print_report(&report, args);
    if let Some(path) = &args.calibrate {
        let profile = calibrate(&report, args.backend)?;
        std::fs::write(path, format!("# Written by `finetp bench --calibrate` from one run on this machine.\n{}", profile.to_toml()))
            .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
        println!("\nCalibrated profile written to {}:\n{}", path.display(), profile.to_toml());
        print_predictions(&report, &model, &profile);
    }
    Ok(())
}

fn print_report(report: &BenchReport, args: &BenchArgs) {
    let dp = report.data_parallel_size;
    let backend = format!("{:?}", args.backend).to_lowercase();
    println!("Decode-step forward per call on rank 0 (median of {}, batch {} per rank, DP {dp}, {backend} backend):", args.repeats, args.batch_size);
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
    println!("\nGEMM probes, every rank at once (median per call on rank 0):");
    println!("{:<8} {:>5} {:>6} {:>6} {:>10} {:>10} {:>10}", "probe", "m", "n", "k", "us", "GB/s", "GFLOP/s");
    for g in &report.gemms {
        println!(
            "{:<8} {:>5} {:>6} {:>6} {:>10.1} {:>10.2} {:>10.2}",
            if g.cold { "memory" } else { "compute" },
            g.m,
            g.n,
            g.k,
            g.median_s * 1e6,
            g.weight_bytes as f64 / g.median_s / 1e9,
            g.flops / g.median_s / 1e9
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

/// Fits the profile from this run's probes, not from the component timings it is then checked
/// against. GEMMs on a CPU take `bytes/bw + flops/peak` (`compute_overlaps_memory = false`):
/// `peak` is the compute probes' flops over their time (weights in cache), `bw` the memory
/// probes' bytes over their time minus their compute share — the bandwidth the GEMM kernel
/// reaches at these batch sizes, not a STREAM figure. Collectives: α is the median time at
/// the smallest message; the bus bandwidth comes from the largest message of at most 1 MiB per
/// member (decode-sized; larger ones are dominated by cache effects on a CPU).
fn calibrate(r: &BenchReport, backend: BackendArg) -> anyhow::Result<HardwareProfile> {
    let mut p = HardwareProfile::builtin("cpu-local")?;
    let name = format!("{backend:?}").to_lowercase();
    p.name = format!("{name}-local");
    p.description = format!(
        "calibrated by `finetp bench --calibrate --backend {name}`: {} ranks as threads of one process, batch {} per rank",
        r.data_parallel_size, r.batch_per_rank
    );
    p.activation_bytes = 4;
    p.compute_overlaps_memory = false;
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
    let hot: Vec<&GemmTiming> = r.gemms.iter().filter(|g| !g.cold).collect();
    let (flops, secs) = hot.iter().fold((0.0, 0.0), |(f, t), g| (f + g.flops, t + g.median_s));
    if flops > 0.0 && secs > 0.0 {
        p.compute_tflops = flops / secs / 1e12;
        p.compute_tops_int8 = p.compute_tflops;
    }
    let (bytes, mem_s) = r.gemms.iter().filter(|g| g.cold).fold((0.0, 0.0), |(b, t), g| {
        let act = (g.m * (g.n + g.k) * 4) as f64;
        (b + g.weight_bytes as f64 + act, t + g.median_s - p.compute_s(g.flops, false))
    });
    if bytes > 0.0 && mem_s > 0.0 {
        p.memory_bandwidth_gbps = bytes / mem_s / 1e9;
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

/// The calibrated model's per-call time of each component next to the measurement, and the
/// largest relative error.
fn print_predictions(r: &BenchReport, model: &ModelConfig, hw: &HardwareProfile) {
    let f = WeightFormat { dtype: DType::F32, quantization: Quantization::None };
    println!("Predicted (calibrated profile) vs measured, per call (one layer for o_proj/MLP):");
    println!("{:<10} {:>5} {:>13} {:>13} {:>13} {:>8}", "component", "size", "gemm+comm ms", "predicted ms", "measured ms", "error");
    let mut worst: f64 = 0.0;
    for (rep, sh) in &r.components {
        for t in [rep, sh] {
            let (g, c, _) = component_times(t.component, t.size, model, &f, r.batch_per_rank, hw);
            let per = layers(t.component, model);
            let pred = (g + c) / per;
            let err = pred / t.median_s - 1.0;
            worst = worst.max(err.abs());
            println!(
                "{:<10} {:>5} {:>13} {:>13.3} {:>13.3} {:>+7.0}%",
                t.component.name(),
                t.size,
                format!("{:.3}+{:.3}", g / per * 1e3, c / per * 1e3),
                pred * 1e3,
                t.median_s * 1e3,
                err * 100.0
            );
        }
    }
    println!("Largest |error|: {:.0}%", worst * 100.0);
}

/// SmolLM2-135M's shapes (the default model), so `finetp bench` needs no download.
pub fn smollm2_config() -> ModelConfig {
    ModelConfig::from_json_str(
        r#"{"model_type":"llama","vocab_size":49152,"hidden_size":576,"intermediate_size":1536,"num_hidden_layers":30,
            "num_attention_heads":9,"num_key_value_heads":3,"tie_word_embeddings":true,"rope_theta":100000,"rms_norm_eps":1e-5}"#,
    )
    .expect("built-in SmolLM2 config parses")
}
