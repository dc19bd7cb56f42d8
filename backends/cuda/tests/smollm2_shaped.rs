//! The whole-model check on one GPU: a SmolLM2-135M-shaped Llama (30 layers, hidden
//! 576, 9 heads / 3 kv heads, vocab 49152) with random weights made on the spot (the device
//! machine has no network and the GGUF is not carried), at DP 4 with all four components at
//! size 2 on the single-GPU path (four ranks as streams on one GPU), against the CPU backend
//! under the same plan: teacher-forced logits within the suite's logits tolerance, and greedy
//! tokens, eager and graph (the decode step really captured on every rank), equal to the CPU's
//! wherever its top-1/top-2 margin exceeds that tolerance. Eight requests of uneven lengths,
//! so ranks carry different token counts.
//!
//! Without a GPU the case is listed as ignored with the reason; `FINETP_REQUIRE_CUDA=1`
//! (ci/cuda-device.sh) makes that a failure.

use std::sync::Arc;

use finetp_backend_cuda::CudaBackend;
use finetp_core::backend::{Backend, DeviceSlot};
use finetp_core::config::{FinegrainedTpConfig, ModelConfig};
use finetp_core::shard::InMemoryWeights;
use finetp_testkit::harness::{self, Case, Need};
use finetp_testkit::suite::model::{Subject, compare};

/// SmolLM2-135M's shapes (random weights are made from them on the spot).
const CONFIG: &str = finetp_testkit::tiny::SMOLLM2_135M_CONFIG;

fn main() {
    // SAFETY: set before any thread starts: every rank on GPU 0, whatever the machine has.
    unsafe { std::env::set_var("FINETP_CUDA_SINGLE_DEVICE", "1") };
    let need = match CudaBackend::open(&DeviceSlot::SOLE) {
        Ok(_) => Need::present("cuda device", "FINETP_REQUIRE_CUDA"),
        Err(e) => Need::absent("cuda device", "FINETP_REQUIRE_CUDA", e.to_string()),
    };
    harness::run(vec![Case::new("cuda::smollm2_shaped_random_dp4_all_four_at_size_2_on_one_gpu_matches_the_cpu", &[need], run)])
}

fn run() -> Result<(), String> {
    let cfg = ModelConfig::from_json_str(CONFIG).map_err(|e| e.to_string())?;
    let weights = Arc::new(InMemoryWeights::random(&finetp_models::tensor_shapes(&cfg), 7, 0.1));
    let prompts = (0..8u32).map(|r| (0..4 + 3 * r).map(|t| (t * 7919 + r * 104_729 + 11) % 49_152).collect()).collect();
    let s = Subject { cfg, weights, prompts, new_tokens: 16, dp: 4, sizes: FinegrainedTpConfig::uniform(2), require_capture: true };
    let t = std::time::Instant::now();
    compare::<CudaBackend>(&s, "SmolLM2-shaped, DP 4, all four at size 2, one GPU")?;
    println!("SmolLM2-shaped DP 4 check took {:.1} s", t.elapsed().as_secs_f64());
    Ok(())
}
