//! `finetp plan`: the groups of each component and, given a model config, the per-rank weight
//! memory with and without fine-grained TP. Needs no weights: a bare `config.json` is enough.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use finetp_core::backend::DType;
use finetp_core::config::{ModelConfig, ParallelConfig};
use finetp_cost::{HardwareProfile, auto, estimate};
use finetp_core::memory::{MemoryReport, Quantization, WeightFormat, gib};
use finetp_core::plan::Plan;

use crate::Failure;
use crate::args::ParallelArgs;

#[derive(Args, Debug)]
pub struct PlanArgs {
    #[command(flatten)]
    pub parallel: ParallelArgs,
    /// A model directory or its config.json (no weights needed).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// dtype of the weights that are not quantized.
    #[arg(long, value_enum, default_value_t = WeightDtype::Bf16)]
    pub dtype: WeightDtype,
    /// Linear-layer quantization of the checkpoint.
    #[arg(long, value_enum, default_value_t = QuantArg::None)]
    pub quantization: QuantArg,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Estimate each component's memory saved, weight-read time saved, communication added and
    /// net TPOT change per decode step (needs --model).
    #[arg(long)]
    pub estimate: bool,
    /// Choose the sizes that minimise TPOT (under --memory-budget-gib) and print the
    /// --additional-config to paste (needs --model; the given sizes are ignored).
    #[arg(long)]
    pub auto: bool,
    /// Hardware profile: a built-in name (ascend-910b, h100-sxm, a100, cpu-local) or a TOML file.
    #[arg(long, default_value = "ascend-910b")]
    pub profile: String,
    /// Decode batch (tokens) per rank for --estimate/--auto.
    #[arg(long, default_value_t = 24)]
    pub batch_size: usize,
    /// Per-rank weight-memory budget for --auto, GiB.
    #[arg(long)]
    pub memory_budget_gib: Option<f64>,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum WeightDtype {
    Bf16,
    F16,
    F32,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum QuantArg {
    None,
    W8a8,
    /// GGUF block formats kept as stored (vocabulary and linear layers).
    #[value(name = "q8_0")]
    Q8_0,
    #[value(name = "q4_0")]
    Q4_0,
    #[value(name = "q4_1")]
    Q4_1,
}

impl PlanArgs {
    fn format(&self) -> WeightFormat {
        WeightFormat {
            dtype: match self.dtype {
                WeightDtype::Bf16 => DType::BF16,
                WeightDtype::F16 => DType::F16,
                WeightDtype::F32 => DType::F32,
            },
            quantization: match self.quantization {
                QuantArg::None => Quantization::None,
                QuantArg::W8a8 => Quantization::W8A8,
                QuantArg::Q8_0 => Quantization::Blocks { vocab: DType::Q8_0, linear: DType::Q8_0 },
                QuantArg::Q4_0 => Quantization::Blocks { vocab: DType::Q4_0, linear: DType::Q4_0 },
                QuantArg::Q4_1 => Quantization::Blocks { vocab: DType::Q4_1, linear: DType::Q4_1 },
            },
        }
    }
}

/// Loads the model config (if any) and checks the sizes against its shapes: bad input.
pub fn load_model(path: Option<&PathBuf>, parallel: &ParallelConfig) -> Result<Option<ModelConfig>, Failure> {
    let Some(path) = path else { return Ok(None) };
    let model = ModelConfig::from_path(path).map_err(|e| Failure::Input(e.into()))?;
    model
        .validate_parallel(parallel)
        .with_context(|| format!("the parallel layout does not fit the model {}", path.display()))
        .map_err(Failure::Input)?;
    Ok(Some(model))
}

pub fn run(args: &PlanArgs) -> Result<(), Failure> {
    let parallel = args.parallel.to_config()?;
    let model = load_model(args.model.as_ref(), &parallel)?;
    if args.estimate || args.auto {
        let Some(m) = &model else {
            return Err(Failure::Input(anyhow::anyhow!("--estimate and --auto need --model <dir or config.json>")));
        };
        return cost(args, m, &parallel);
    }
    let plan = Plan::new(&parallel);
    let memory = model.as_ref().map(|m| MemoryReport::new(m, &parallel, args.format()));
    if args.json {
        let out = serde_json::json!({ "plan": plan, "model": model, "memory": memory });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    print!("{plan}");
    if let (Some(m), Some(r)) = (&model, &memory) {
        println!();
        print!("{}", memory_table(m, r));
        if m.moe.is_some() {
            print!("{}", expert_table(m, &parallel, args.format()));
        }
        for cut in MemoryReport::cut_blocks(m, &parallel, &r.format) {
            println!("note: {cut}");
        }
    } else {
        println!("\n(pass --model <dir or config.json> for the per-rank memory report)");
    }
    Ok(())
}

/// The per-rank memory table. Every rank of a uniform layout holds the same bytes.
fn memory_table(model: &ModelConfig, r: &MemoryReport) -> String {
    let mut s = String::new();
    let quant = match r.format.quantization {
        Quantization::None => String::new(),
        Quantization::W8A8 => ", linear layers W8A8 (int8 + per-channel scale/offset)".into(),
        Quantization::Blocks { vocab, linear } => format!(", vocabulary {vocab} and linear layers {linear} as stored"),
    };
    let _ = writeln!(
        s,
        "Per-rank weight memory, GiB ({:?}, {} weights{quant}; every rank holds the same)",
        model.architecture, r.format.dtype
    );
    let _ = writeln!(s, "{:<18} {:>7} {:>12} {:>13} {:>9}", "module", "ft size", "without", "fine-grained", "saving");
    for row in &r.rows {
        let size = if row.module.component().is_some() { row.finegrained_size.to_string() } else { "-".into() };
        let _ = writeln!(
            s,
            "{:<18} {:>7} {:>12.3} {:>13.3} {:>9.3}",
            row.module.name(),
            size,
            gib(row.baseline_bytes as i64),
            gib(row.bytes as i64),
            gib(row.saving_bytes())
        );
    }
    let (b, t) = (r.baseline_total() as i64, r.total() as i64);
    let _ = writeln!(s, "{:<18} {:>7} {:>12.3} {:>13.3} {:>9.3}", "total", "", gib(b), gib(t), gib(b - t));
    s
}

/// A MoE model's per-rank totals with and without expert parallelism, each without and with
/// the fine-grained sizes given (#20: what EP and fine-grained TP each take off a rank).
fn expert_table(model: &ModelConfig, parallel: &ParallelConfig, format: WeightFormat) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "\n{:<31} {:>23} {:>20}", "Per-rank total, GiB", "without fine-grained TP", "with fine-grained TP");
    for ep in [false, true] {
        let p = ParallelConfig { enable_expert_parallel: ep, ..parallel.clone() };
        let r = MemoryReport::new(model, &p, format);
        let label = if ep { format!("with expert parallelism (EP {})", p.expert_parallel_size()) } else { "without expert parallelism".to_string() };
        let _ = writeln!(s, "{label:<31} {:>23.3} {:>20.3}", gib(r.baseline_total() as i64), gib(r.total() as i64));
    }
    s
}

/// `--estimate` and `--auto`.
fn cost(args: &PlanArgs, m: &ModelConfig, parallel: &ParallelConfig) -> Result<(), Failure> {
    let hw = HardwareProfile::resolve(&args.profile).map_err(|e| Failure::Input(e.into()))?;
    if args.auto {
        let budget = args.memory_budget_gib.map(|g| (g * (1u64 << 30) as f64) as u64);
        let choice = auto(m, parallel, args.format(), args.batch_size, &hw, budget).map_err(|e| Failure::Input(e.into()))?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&choice)?);
            return Ok(());
        }
        print!("{}", choice.estimate);
        println!("\nper-rank weights: {:.3} GiB", gib(choice.weight_bytes_per_rank as i64));
        println!("--additional-config '{}'", choice.config.to_additional_config_json());
        return Ok(());
    }
    let e = estimate(m, parallel, args.format(), args.batch_size, &hw);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&e)?);
    } else {
        print!("{e}");
    }
    Ok(())
}
