//! `linear` on cuBLASLt: `y[m, n] = x[m, k] · w[n, k]ᵀ` with f32 accumulation.
//!
//! Row-major `y = x wᵀ` is column-major `yᵀ = w xᵀ`: A is the weight (`[k, n]` column-major,
//! transposed), B the activations (`[k, m]`), D the output (`[n, m]`, f32). f32 weights multiply
//! f32 activations (compute 32F, no TF32). cuBLASLt wants A and B of one type, so for bf16
//! weights the activations are split into three bf16 planes that sum to them exactly
//! (`finetp_split_bf16`), multiplied in one GEMM of `3m` rows (the weight read once, what decode
//! is bound by) into f32, and the planes summed: the f32 product the CPU reference computes, not
//! a 16-bit one. f16 weights (whose exponent range cannot hold the planes) are widened to f32
//! per call: exact, and slower.
//! The matmul descriptor, layouts and the heuristic's algorithm are made once per shape and
//! kept; the 32 MiB workspace is the handle's own, so a captured GEMM needs no allocation.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Mutex;

use cudarc::cublaslt::result as lt;
use cudarc::cublaslt::sys as lts;
use cudarc::driver::sys::{CUdeviceptr, CUstream};
use finetp_core::backend::{BackendError, DType, Gemm, Tensor, checks};

use crate::CudaBackend;
use crate::kernels::{Arg, elementwise_grid};

const WORKSPACE_BYTES: usize = 32 << 20;

/// The bf16 planes f32 activations are split into for a bf16 weight (see `finetp_split_bf16`).
const SPLIT: usize = 3;

/// One shape's descriptors and algorithm.
struct LtPlan {
    desc: lts::cublasLtMatmulDesc_t,
    a: lts::cublasLtMatrixLayout_t,
    b: lts::cublasLtMatrixLayout_t,
    d: lts::cublasLtMatrixLayout_t,
    algo: lts::cublasLtMatmulAlgo_t,
}

/// A rank's cuBLASLt handle, workspace and plans.
pub(crate) struct Lt {
    handle: lts::cublasLtHandle_t,
    workspace: CUdeviceptr,
    plans: Mutex<HashMap<(usize, usize, usize, DType), LtPlan>>,
}

fn blas_err(what: &str, e: lt::CublasError) -> BackendError {
    BackendError::device(format!("cuBLASLt {what}"), e)
}

impl Lt {
    /// A handle and workspace on the current context.
    pub(crate) fn new(_stream: CUstream) -> Result<Self, BackendError> {
        let handle = lt::create_handle().map_err(|e| blas_err("cublasLtCreate", e))?;
        // SAFETY: a plain allocation on the current context, owned by this struct.
        let workspace = unsafe { cudarc::driver::result::malloc_sync(WORKSPACE_BYTES) }.map_err(|e| crate::runtime::driver_err("cuMemAlloc (cuBLASLt workspace)", e))?;
        Ok(Self { handle, workspace, plans: Mutex::new(HashMap::new()) })
    }

    fn plan(&self, m: usize, n: usize, k: usize, wdt: DType) -> Result<lts::cublasLtMatmulAlgo_t, BackendError> {
        let mut plans = self.plans.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(p) = plans.get(&(m, n, k, wdt)) {
            return Ok(p.algo);
        }
        let ab = match wdt {
            DType::BF16 => lts::cudaDataType::CUDA_R_16BF,
            DType::F16 => lts::cudaDataType::CUDA_R_16F,
            _ => lts::cudaDataType::CUDA_R_32F,
        };
        let f32t = lts::cudaDataType::CUDA_R_32F;
        let desc = lt::create_matmul_desc(lts::cublasComputeType_t::CUBLAS_COMPUTE_32F, f32t).map_err(|e| blas_err("MatmulDescCreate", e))?;
        let trans_a: i32 = 1; // CUBLAS_OP_T
        // SAFETY: an i32 attribute on a live descriptor.
        unsafe { lt::set_matmul_desc_attribute(desc, lts::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA, (&raw const trans_a).cast(), 4) }.map_err(|e| blas_err("MatmulDescSetAttribute", e))?;
        let a = lt::create_matrix_layout(ab, k as u64, n as u64, k as i64).map_err(|e| blas_err("MatrixLayoutCreate", e))?;
        let b = lt::create_matrix_layout(ab, k as u64, m as u64, k as i64).map_err(|e| blas_err("MatrixLayoutCreate", e))?;
        let d = lt::create_matrix_layout(f32t, n as u64, m as u64, n as i64).map_err(|e| blas_err("MatrixLayoutCreate", e))?;
        let pref = lt::create_matmul_pref().map_err(|e| blas_err("MatmulPreferenceCreate", e))?;
        let ws = WORKSPACE_BYTES as u64;
        // SAFETY: live descriptors; the preference is destroyed once, after the query.
        let heur = unsafe {
            let set = lt::set_matmul_pref_attribute(pref, lts::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, (&raw const ws).cast(), 8);
            let h = set.and_then(|()| lt::get_matmul_algo_heuristic(self.handle, desc, a, b, d, d, pref));
            let _ = lt::destroy_matmul_pref(pref);
            match h {
                Ok(h) => h,
                Err(e) => {
                    for l in [a, b, d] {
                        let _ = lt::destroy_matrix_layout(l);
                    }
                    let _ = lt::destroy_matmul_desc(desc);
                    return Err(blas_err(&format!("no algorithm for m={m} n={n} k={k} {wdt}"), e));
                }
            }
        };
        plans.insert((m, n, k, wdt), LtPlan { desc, a, b, d, algo: heur.algo });
        Ok(heur.algo)
    }

    /// Enqueues `D = op(A) · B` for a planned shape.
    ///
    /// # Safety
    /// `w`, `x`, `y` are live device buffers of the planned shape and dtypes.
    unsafe fn matmul(&self, key: (usize, usize, usize, DType), w: CUdeviceptr, x: CUdeviceptr, y: CUdeviceptr, stream: CUstream) -> Result<(), BackendError> {
        let algo = self.plan(key.0, key.1, key.2, key.3)?;
        let plans = self.plans.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let p = &plans[&key];
        let (alpha, beta) = (1f32, 0f32);
        // SAFETY: as the caller promises; the workspace is this handle's own.
        unsafe {
            lt::matmul(
                self.handle,
                p.desc,
                (&raw const alpha).cast(),
                (&raw const beta).cast(),
                w as *const c_void,
                p.a,
                x as *const c_void,
                p.b,
                y as *const c_void,
                p.d,
                y as *mut c_void,
                p.d,
                &algo,
                self.workspace as *mut c_void,
                WORKSPACE_BYTES,
                stream.cast(),
            )
        }
        .map_err(|e| blas_err("cublasLtMatmul", e))
    }
}

impl Drop for Lt {
    fn drop(&mut self) {
        let plans = std::mem::take(self.plans.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner));
        // SAFETY: every object made by this struct, destroyed once (the stream is idle: the
        // owning `Shared` syncs before dropping).
        unsafe {
            for p in plans.into_values() {
                let _ = lt::destroy_matrix_layout(p.a);
                let _ = lt::destroy_matrix_layout(p.b);
                let _ = lt::destroy_matrix_layout(p.d);
                let _ = lt::destroy_matmul_desc(p.desc);
            }
            let _ = lt::destroy_handle(self.handle);
            cudarc::driver::sys::cuMemFree_v2(self.workspace);
        }
    }
}

impl Gemm for CudaBackend {
    /// `x [m, k]` f32 (activations), `w [n, k]` f32/bf16/f16 (replicated, or this rank's
    /// column or row shard), `bias [n]` f32, `y [m, n]` f32.
    fn linear(&self, x: &Tensor<Self>, w: &Tensor<Self>, bias: Option<&Tensor<Self>>, y: &mut Tensor<Self>) -> Result<(), BackendError> {
        let (m, n, k) = checks::linear(x, w, bias, y)?;
        if !matches!(w.dtype(), DType::F32 | DType::BF16 | DType::F16) {
            return Err(BackendError::Unsupported(format!("the cuda backend multiplies f32, bf16 and f16 weights, not {}", w.dtype())));
        }
        if m == 0 || n == 0 {
            return Ok(());
        }
        self.bind()?;
        if k == 0 {
            self.memset0(y.buffer().device_ptr(), y.buffer().len())?;
        } else {
            let (w_ptr, y_ptr, stream) = (w.buffer().device_ptr(), y.buffer().device_ptr(), self.stream());
            match w.dtype() {
                DType::BF16 => {
                    let planes = self.empty(&[SPLIT * m, k], DType::BF16)?;
                    let args = [Arg::Ptr(x.buffer().device_ptr()), Arg::Ptr(planes.buffer().device_ptr()), Arg::U64((m * k) as u64), Arg::U32(SPLIT as u32)];
                    self.launch("finetp_split_bf16", elementwise_grid(m * k), 256, &args)?;
                    let parts = self.empty(&[SPLIT * m, n], DType::F32)?;
                    self.enqueued();
                    // SAFETY: shapes checked above; `planes` and `parts` are freed
                    // stream-ordered, after the GEMM and the sum.
                    unsafe { self.shared.lt.matmul((SPLIT * m, n, k, DType::BF16), w_ptr, planes.buffer().device_ptr(), parts.buffer().device_ptr(), stream)? };
                    let args = [Arg::Ptr(y_ptr), Arg::Ptr(parts.buffer().device_ptr()), Arg::U32(SPLIT as u32), Arg::U64((m * n) as u64)];
                    self.launch("finetp_sum_parts_f32", elementwise_grid(m * n), 256, &args)?;
                }
                dt => {
                    // f32 weights as they are; f16 ones widened (exactly) first.
                    let wide = if dt == DType::F16 {
                        let t = self.empty(&[n, k], DType::F32)?;
                        self.launch("finetp_widen_f16", elementwise_grid(n * k), 256, &[Arg::Ptr(w_ptr), Arg::Ptr(t.buffer().device_ptr()), Arg::U64((n * k) as u64)])?;
                        Some(t)
                    } else {
                        None
                    };
                    let wp = wide.as_ref().map_or(w_ptr, |t| t.buffer().device_ptr());
                    self.enqueued();
                    // SAFETY: shapes checked above; every buffer is alive while enqueued.
                    unsafe { self.shared.lt.matmul((m, n, k, DType::F32), wp, x.buffer().device_ptr(), y_ptr, stream)? };
                }
            }
        }
        if let Some(b) = bias {
            if b.dtype() != DType::F32 {
                return Err(BackendError::DType { op: "linear bias", expected: "f32", got: b.dtype() });
            }
            let (mu, nu) = (m as u32, n as u32);
            self.launch("finetp_add_bias", elementwise_grid(m * n), 256, &[Arg::Ptr(y.buffer().device_ptr()), Arg::Ptr(b.buffer().device_ptr()), Arg::U32(mu), Arg::U32(nu)])?;
        }
        Ok(())
    }
}
