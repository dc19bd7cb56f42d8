//! The NVRTC kernels: CUDA C in `cu/`, compiled once per process and architecture at the first
//! `open` (cached, so every rank on the same kind of GPU shares one compile), then loaded into
//! each rank's context.
//!
//! `ci/cuda.sh` compiles the same source with the real NVRTC from PyPI (pinned 13.0.88: its
//! PTX is ISA 9.0, what driver 580 / CUDA 13.0 accepts) for `sm_90a` and assembles it with
//! `ptxas` (`tests/nvrtc_ptx.rs`), so a kernel that does not compile fails CI on a machine
//! without a GPU.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use cudarc::nvrtc::{CompileOptions, Ptx};

/// The kernel source, in the order NVRTC reads it (one translation unit).
pub const SOURCES: [(&str, &str); 4] = [
    ("common.cuh", include_str!("cu/common.cuh")),
    ("elementwise.cu", include_str!("cu/elementwise.cu")),
    ("kv_attention.cu", include_str!("cu/kv_attention.cu")),
    ("sample.cu", include_str!("cu/sample.cu")),
];

/// Every `extern "C"` kernel the backend launches (each must be in the compiled PTX).
pub const KERNELS: [&str; 13] = [
    "finetp_rms_norm",
    "finetp_silu_mul",
    "finetp_add_f32",
    "finetp_add_u32",
    "finetp_sum_parts_f32",
    "finetp_add_bias",
    "finetp_split_bf16",
    "finetp_widen_f16",
    "finetp_embedding",
    "finetp_rope",
    "finetp_kv_write",
    "finetp_attention",
    "finetp_sample",
];

/// The whole translation unit.
pub fn source() -> String {
    SOURCES.iter().map(|(name, text)| format!("// ---- {name}\n{text}\n")).collect()
}

/// NVRTC's `--gpu-architecture` for a compute capability: the real architecture (`sm_XY`,
/// `sm_90a` on Hopper for its `a` features), so the PTX targets exactly this GPU. `None` for
/// a capability this table lacks (NVRTC's default, which the driver JIT-compiles up).
pub fn arch((major, minor): (i32, i32)) -> Option<&'static str> {
    Some(match (major, minor) {
        (7, 0) => "sm_70",
        (7, 5) => "sm_75",
        (8, 0) => "sm_80",
        (8, 6) => "sm_86",
        (8, 7) => "sm_87",
        (8, 9) => "sm_89",
        (9, 0) => "sm_90a",
        (10, 0) => "sm_100",
        (12, 0) => "sm_120",
        _ => return None,
    })
}

/// The options every compile uses (the CI check passes the same).
pub fn options(arch: Option<&'static str>) -> CompileOptions {
    // No fused multiply-adds: the CPU reference rounds every product and sum, and RoPE's and
    // attention's tolerances are the CPU's rounding, not FMA's.
    CompileOptions { arch, fmad: Some(false), options: vec!["--std=c++17".into()], name: Some("finetp.cu".into()), ..Default::default() }
}

/// Compiles the kernels for `arch` (NVRTC must be loadable: the caller checks).
///
/// # Errors
/// NVRTC's log, as text.
pub fn compile(arch: Option<&'static str>) -> Result<Ptx, String> {
    cudarc::nvrtc::compile_ptx_with_opts(source(), options(arch)).map_err(|e| match e {
        cudarc::nvrtc::CompileError::CompileError { log, .. } => format!("NVRTC could not compile finetp's kernels:\n{}", log.to_string_lossy()),
        other => format!("NVRTC failed: {other}"),
    })
}

/// Compiled PTX (or NVRTC's error) per architecture.
type PtxCache = Mutex<HashMap<Option<&'static str>, Result<Ptx, String>>>;

static CACHE: OnceLock<PtxCache> = OnceLock::new();

/// [`compile`], once per architecture per process.
pub(crate) fn cached(arch: Option<&'static str>) -> Result<Ptx, String> {
    let mut map = CACHE.get_or_init(Default::default).lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    map.entry(arch).or_insert_with(|| compile(arch)).clone()
}
