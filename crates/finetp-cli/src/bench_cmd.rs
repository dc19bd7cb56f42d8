//! `finetp bench`: each component's decode-step forward, sharded vs replicated, and the
//! collectives alone, measured side by side in one run on the selected backend.

use std::path::PathBuf;

use anyhow::anyhow;
use clap::Args;
use finetp_core::backend::{DType, Device};
use finetp_core::config::{Component, ModelConfig};
use finetp_cost::{HardwareProfile, component_times};
use finetp_core::memory::{Quantization, WeightFormat};
use finetp_engine::bench::{BenchConfig, CollectiveTiming, ComponentTiming, GemmTiming, time_collectives, time_component, time_gemm};
use finetp_engine::{BackendKind, EngineError, Launcher, WithBackend};

use crate::Failure;
use crate::args::{BackendArg, ParallelArgs};

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
    #[arg(long, default_value_t = 31)]
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

/// `finetp bench`'s measurements, on whichever backend is chosen.
struct Measure<'a> {
    launcher: Launcher,
    model: &'a ModelConfig,
    sizes: &'a [(Component, usize)],
    cfg: &'a BenchConfig,
}

impl WithBackend for Measure<'_> {
    type Output = Result<BenchReport, EngineError>;

    fn run<B: Device>(self, _kind: BackendKind) -> Self::Output {
        measure::<B>(&self.launcher, self.model, self.sizes, self.cfg)
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
    /// GEMM probes on every rank at once: streaming cold weights from memory at `m = 1` and at
    /// the batch sizes the components run (this rank's tokens, and the largest group's), and on
    /// cache-resident weights at those batch sizes (compute).
    pub gemms: Vec<GemmTiming>,
}

/// Every measurement of a `finetp bench` run, on backend `B`.
pub fn measure<B: Device>(launcher: &Launcher, model: &ModelConfig, sizes: &[(Component, usize)], cfg: &BenchConfig) -> Result<BenchReport, EngineError> {
    let dp = cfg.data_parallel_size;
    // Progress from one process (every process of an MPI job runs the same probes).
    let say = |what: String| {
        if launcher.is_root() {
            eprintln!("bench: {what} ...");
        }
    };
    let mut components = Vec::new();
    for &(c, size) in sizes {
        say(format!("{c} replicated vs size {size}"));
        let rep = time_component::<B>(launcher, cfg, model, c, 1)?;
        let sh = time_component::<B>(launcher, cfg, model, c, size)?;
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
            say(format!("collectives, group {p}, {kib} KiB per member"));
            collectives.extend(time_collectives::<B>(launcher, cfg, p, kib * 1024)?);
        }
    }
    let (h, b, pmax) = (model.hidden_size, cfg.batch_per_rank, group_sizes.iter().copied().max().unwrap_or(1));
    say(format!("GEMM probes (memory and compute) on {dp} ranks at once"));
    let mut gemms = vec![time_gemm::<B>(launcher, cfg, (8192, h), 1, true)?];
    for m in [b, pmax * b] {
        gemms.push(time_gemm::<B>(launcher, cfg, (8192, h), m, true)?);
        gemms.push(time_gemm::<B>(launcher, cfg, (256, h), m, false)?);
    }
    Ok(BenchReport { batch_per_rank: cfg.batch_per_rank, data_parallel_size: dp, components, collectives, gemms })
}

pub fn run(args: &BenchArgs) -> Result<(), Failure> {
    let parallel = args.parallel.to_config()?;
    if parallel.tensor_parallel_size > 1 {
        // The probes time one component on DP ranks, which is what the cost model is fitted to;
        // timing it inside TP groups would need TP-sliced inputs per rank.
        return Err(Failure::Input(anyhow!(
            "finetp bench times components at --tensor-parallel-size 1 (got {}); `finetp run --tensor-parallel-size {} --json` reports TPOT under TP",
            parallel.tensor_parallel_size,
            parallel.tensor_parallel_size
        )));
    }
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
    let backend = args.backend.kind();
    // Under mpirun the ranks are processes, and the collectives measured are the transport's.
    let launcher = crate::launch::launcher(parallel.world_size(), None, finetp_engine::DEFAULT_TIMEOUT)?;
    let root = launcher.is_root();
    let work = Measure { launcher, model: &model, sizes: &sizes, cfg: &cfg };
    let report = finetp_engine::dispatch(backend, work).map_err(|e| Failure::Input(e.into()))??;
    // Process 0 holds rank 0's timings, which are what the report shows.
    if !root {
        return Ok(());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    print_report(&report, args);
    if let Some(path) = &args.calibrate {
        let profile = calibrate(&report, &model, backend)?;
        std::fs::write(path, format!("# Written by `finetp bench --calibrate` from one run on this machine.\n{}", profile.to_toml()))
            .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
        println!("\nCalibrated profile written to {}:\n{}", path.display(), profile.to_toml());
        print_predictions(&report, &model, &profile);
        print_probe_check(&report, &profile);
    }
    Ok(())
}

fn print_report(report: &BenchReport, args: &BenchArgs) {
    let dp = report.data_parallel_size;
    let backend = args.backend.kind();
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

/// Fits the profile to this run. Collectives: α and the bus bandwidth by a least-squares line
/// through every collective of at most 1 MiB per member (decode-sized; larger ones are dominated
/// by cache effects on a CPU). Memory bandwidth: the streaming GEMM probe (`m = 1`, cold
/// weights). Compute rate and overlap rule (roofline `max`, or the sum): those that best fit the
/// component timings themselves — every component replicated and sharded, in log error — by a
/// grid search; the layer overhead is what the replicated embedding (a gather of a few rows)
/// takes beyond its bytes. The in-cache GEMM probes are printed next to the fitted compute rate
/// as an independent check.
fn calibrate(r: &BenchReport, model: &ModelConfig, backend: BackendKind) -> anyhow::Result<HardwareProfile> {
    let mut p = HardwareProfile::builtin("cpu-local")?;
    let name = backend.name();
    p.name = format!("{name}-local");
    p.description = format!(
        "calibrated by `finetp bench --calibrate --backend {name}`: {} ranks as threads of one process, batch {} per rank",
        r.data_parallel_size, r.batch_per_rank
    );
    p.activation_bytes = 4;
    // Collectives: `t = α + x / bw` by least squares over every op and group at decode sizes
    // (≤ 1 MiB per member), `x` = the bytes a member moves, `(P − 1)·bytes_per_member`.
    let pts: Vec<(f64, f64)> = r
        .collectives
        .iter()
        // All-reduce moves about twice a member's bytes; the line is fitted to the others.
        .filter(|c| c.bytes_per_member <= 1 << 20 && c.group_size > 1 && c.op != "all_reduce")
        .map(|c| ((c.group_size - 1) as f64 * c.bytes_per_member as f64, c.median_s))
        .collect();
    let n = pts.len() as f64;
    let (sx, sy) = pts.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (sxx, sxy) = pts.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x * x, b + x * y));
    let det = n * sxx - sx * sx;
    if pts.len() >= 2 && det > 0.0 {
        let slope = (n * sxy - sx * sy) / det;
        // On a noisy machine one slow large message can tilt the line below zero at x = 0: then
        // the fastest call measured (the smallest message, nearly all latency) stands for α.
        let intercept = (sy - slope * sx) / n;
        let fastest = pts.iter().map(|&(_, y)| y).fold(f64::INFINITY, f64::min);
        p.collective_alpha_us = if intercept > 0.0 { intercept } else { fastest } * 1e6;
        if slope > 0.0 {
            p.collective_bus_bandwidth_gbps = 1.0 / slope / 1e9;
        }
    }
    (p.inter_node_alpha_us, p.inter_node_bus_bandwidth_gbps) = (p.collective_alpha_us, p.collective_bus_bandwidth_gbps);
    // Memory: the streaming GEMM probe (m = 1, cold weights). At decode batches the components
    // are mostly compute-bound on a CPU, so their timings bound the bandwidth only from below;
    // the probe measures it.
    if let Some(g) = r.gemms.iter().find(|g| g.cold && g.m == 1) {
        p.memory_bandwidth_gbps = (g.weight_bytes + g.m * (g.n + g.k) * 4) as f64 / g.median_s / 1e9;
    }
    // Compute and overlap: a log-spaced grid of compute rates under each rule.
    let timings: Vec<&ComponentTiming> = r.components.iter().flat_map(|(a, b)| [a, b]).collect();
    let embedding = timings.iter().find(|t| t.component == Component::Embedding && t.size == 1);
    let grid = |lo: f64, hi: f64, steps: usize| (0..=steps).map(move |i| lo * (hi / lo).powf(i as f64 / steps as f64));
    let mut best: Option<(f64, HardwareProfile)> = None;
    for overlap in [true, false] {
        for gflops in grid(1.0, 5000.0, 2000) {
            let mut q = p.clone();
            (q.compute_overlaps_memory, q.compute_tflops, q.compute_tops_int8) = (overlap, gflops / 1e3, gflops / 1e3);
            q.layer_overhead_us = 0.0;
            if let Some(e) = embedding {
                q.layer_overhead_us = ((e.median_s - predicted(e, r, model, &q)) * 1e6).max(0.0);
            }
            let err: f64 = timings.iter().map(|t| (predicted(t, r, model, &q) / t.median_s).ln().powi(2)).sum();
            if err.is_finite() && best.as_ref().is_none_or(|(e, _)| err < *e) {
                best = Some((err, q));
            }
        }
    }
    Ok(best.map_or(p, |(_, q)| q))
}

/// The model's time of one call of `t`'s component (one layer for o_proj/MLP) under `hw`.
fn predicted(t: &ComponentTiming, r: &BenchReport, model: &ModelConfig, hw: &HardwareProfile) -> f64 {
    let f = WeightFormat { dtype: DType::F32, quantization: Quantization::None };
    let (g, c, _) = component_times(t.component, t.size, model, &f, r.batch_per_rank, hw);
    (g + c) / layers(t.component, model)
}

/// What the GEMM probes measured, next to the fitted rates.
fn print_probe_check(r: &BenchReport, hw: &HardwareProfile) {
    let stream = r.gemms.iter().find(|g| g.cold && g.m == 1).map(|g| g.weight_bytes as f64 / g.median_s / 1e9);
    let (f, t) = r.gemms.iter().filter(|g| !g.cold).fold((0.0, 0.0), |(f, t), g| (f + g.flops, t + g.median_s));
    println!(
        "Memory bandwidth from the streaming GEMM probe (m = 1): {} GB/s. Compute: in-cache GEMM probes {} GFLOP/s vs {:.1} GFLOP/s fitted to the components ({}).",
        stream.map_or("n/a".into(), |b| format!("{b:.1}")),
        if t > 0.0 { format!("{:.1}", f / t / 1e9) } else { "n/a".into() },
        hw.compute_tflops * 1e3,
        if hw.compute_overlaps_memory { "compute overlaps memory" } else { "compute adds to memory" }
    );
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
    println!("{:<10} {:>5} {:>15} {:>13} {:>13} {:>8}", "component", "size", "gemm+comm ms", "predicted ms", "measured ms", "error");
    let mut worst: f64 = 0.0;
    for (rep, sh) in &r.components {
        for t in [rep, sh] {
            let (g, c, _) = component_times(t.component, t.size, model, &f, r.batch_per_rank, hw);
            let per = layers(t.component, model);
            let pred = predicted(t, r, model, hw);
            let err = pred / t.median_s - 1.0;
            worst = worst.max(err.abs());
            println!(
                "{:<10} {:>5} {:>15} {:>13.4} {:>13.4} {:>+7.0}%",
                t.component.name(),
                t.size,
                format!("{:.4}+{:.4}", g / per * 1e3, c / per * 1e3),
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
