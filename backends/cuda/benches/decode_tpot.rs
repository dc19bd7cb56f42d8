//! `cargo bench -p finetp-backend-cuda --bench decode_tpot` (or the carried binary, on the
//! device machine, from `ci/cuda-device.sh`): a SmolLM2-135M-shaped Llama with random bf16
//! weights made on the spot, four ranks on one GPU (the single-GPU path), greedy decode of
//! 8 requests × 64 tokens, measured side by side in one run:
//! - fine-grained TP (all four components at size 2) against replicated (DP 4, every
//!   component at size 1), at the same batch;
//! - graph (the captured decode step replayed) against eager, TPOT;
//! - per-rank weight bytes held (measured from the buffers) beside the run.
//!
//! Without a GPU it prints why and exits 0 (`FINETP_REQUIRE_CUDA=1`: exit 1).

use std::sync::Arc;
use std::time::Duration;

use finetp_backend_cuda::CudaBackend;
use finetp_core::backend::{Backend, DType, DeviceSlot};
use finetp_core::config::{FinegrainedTpConfig, ModelConfig, ParallelConfig};
use finetp_core::plan::Plan;
use finetp_core::shard::InMemoryWeights;
use finetp_engine::{EngineConfig, EngineError, ExecMode, Launcher, Rank, Request, Sampling};

/// SmolLM2-135M's shapes (random weights are made from them on the spot).
const CONFIG: &str = finetp_testkit::tiny::SMOLLM2_135M_CONFIG;

fn main() {
    // SAFETY: set before any thread starts.
    unsafe { std::env::set_var("FINETP_CUDA_SINGLE_DEVICE", "1") };
    let gpu = match CudaBackend::open(&DeviceSlot::SOLE) {
        Ok(be) => be.describe(),
        Err(e) => {
            println!("decode_tpot: skipped: {e}");
            std::process::exit(i32::from(std::env::var("FINETP_REQUIRE_CUDA").is_ok_and(|v| v == "1")));
        }
    };
    println!("decode_tpot on {gpu}");
    if let Err(e) = run() {
        eprintln!("decode_tpot: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let cfg = ModelConfig::from_json_str(CONFIG).map_err(|e| e.to_string())?;
    let mut w = InMemoryWeights::random(&finetp_models::tensor_shapes(&cfg), 3, 0.1);
    for t in w.tensors.values_mut() {
        *t = t.cast(DType::BF16).map_err(|e| e.to_string())?;
    }
    let w = Arc::new(w);
    let requests: Vec<Request> = (0..8u32)
        .map(|i| Request { id: i as usize, prompt: (0..16 + i).map(|t| (t * 7919 + i * 131) % 49_152).collect(), max_tokens: 64, sampling: Sampling::default(), stop_ids: vec![], ..Request::default() })
        .collect();
    println!("| layout (DP 4, one GPU) | mode | TPOT ms | weight MiB per rank | captured ops |");
    println!("|---|---|---|---|---|");
    for (label, sizes) in [("replicated (all sizes 1)", FinegrainedTpConfig::uniform(1)), ("fine-grained (all four at 2)", FinegrainedTpConfig::uniform(2))] {
        let plan = Plan::new(&ParallelConfig::new(4, 1, 1, false, sizes).map_err(|e| e.to_string())?);
        for mode in [ExecMode::Eager, ExecMode::Graph] {
            let engine = EngineConfig::new(mode, 128);
            let report = finetp_engine::generate(&Launcher::threads(Duration::from_secs(120)), &plan, &engine, &requests, |r: &Rank<CudaBackend>| {
                finetp_models::load(&r.be, &cfg, &*w, &r.groups).map_err(|source| EngineError::Model { rank: r.rank, source })
            })
            .map_err(|e| e.to_string())?;
            let tpot = report.tpot_s().map_or_else(|| "-".into(), |t| format!("{:.2}", t * 1e3));
            let mib: Vec<String> = report.ranks.iter().map(|r| format!("{:.1}", r.weight_bytes.iter().map(|m| m.bytes).sum::<usize>() as f64 / (1 << 20) as f64)).collect();
            let ops = report.ranks.iter().filter_map(|r| r.graph.as_ref()).map(|g| g.eager_reason.clone().unwrap_or_else(|| g.captured_ops.to_string())).collect::<Vec<_>>().join(", ");
            println!("| {label} | {mode:?} | {tpot} | {} | {} |", mib.join(" / "), if ops.is_empty() { "-".into() } else { ops });
        }
    }
    Ok(())
}
