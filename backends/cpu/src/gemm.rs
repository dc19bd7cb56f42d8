//! GEMM for the CPU backend: `y = x · wᵀ (+ bias)` with f32, bf16 or f16 weights and f32
//! accumulation.
//!
//! Decode is memory-bound: every weight byte is read once per step, so the kernel is
//! weight-stationary — each task takes a block of weight rows, widens one row at a time to f32
//! (a few KiB, L1-resident) and dots it with every activation row. The weight matrix is thus
//! streamed exactly once per call whatever `m` is, which is what the roofline asks for at
//! decode shapes (m ≤ ~32). Blocks of rows are spread over the rank's rayon pool.

use finetp_core::backend::{BackendError, DType, Gemm, Tensor};
use half::{bf16, f16};
use rayon::prelude::*;

use crate::storage::{CpuBackend, CpuStorage};

/// Weight rows per task: large enough to amortise scheduling, small enough to balance 2+ threads.
const ROWS_PER_TASK: usize = 32;

/// A read-only view of weight rows in their stored dtype.
#[derive(Clone, Copy)]
enum Weights<'a> {
    F32(&'a [f32]),
    BF16(&'a [bf16]),
    F16(&'a [f16]),
}

impl<'a> Weights<'a> {
    fn of(s: &'a CpuStorage) -> Result<Self, BackendError> {
        match s {
            CpuStorage::F32(v) => Ok(Weights::F32(v)),
            CpuStorage::BF16(v) => Ok(Weights::BF16(v)),
            CpuStorage::F16(v) => Ok(Weights::F16(v)),
            CpuStorage::U32(_) => Err(BackendError::DType { op: "linear (weight)", expected: "f32, bf16 or f16", got: DType::U32 }),
        }
    }

    /// Row `j` (of length `k`) widened to f32 into `buf`; f32 rows are borrowed as they are.
    fn row<'b>(&'b self, j: usize, k: usize, buf: &'b mut [f32]) -> &'b [f32] {
        let r = j * k..(j + 1) * k;
        match self {
            Weights::F32(v) => &v[r],
            Weights::BF16(v) => {
                for (d, s) in buf.iter_mut().zip(&v[r]) {
                    *d = f32::from_bits(u32::from(s.to_bits()) << 16);
                }
                buf
            }
            Weights::F16(v) => {
                for (d, s) in buf.iter_mut().zip(&v[r]) {
                    *d = s.to_f32();
                }
                buf
            }
        }
    }
}

#[inline(always)]
fn dot_generic(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] = x[i].mul_add(y[i], acc[i]);
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s = x.mul_add(*y, s);
    }
    s
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_generic(a, b)
}

/// `Σ a[i]·b[i]` with the widest vector unit the CPU has.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the required CPU features were detected at run time just above.
            return unsafe { dot_avx2(a, b) };
        }
    }
    // Without FMA hardware `mul_add` is a slow libm call, so use plain arithmetic.
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// One task: weight rows `j0..j1` against all `m` activation rows; returns `[m, j1 - j0]`.
fn block(x: &[f32], m: usize, k: usize, w: Weights<'_>, j0: usize, j1: usize) -> Vec<f32> {
    let nb = j1 - j0;
    let mut out = vec![0f32; m * nb];
    let mut buf = vec![0f32; k];
    for j in j0..j1 {
        let row = w.row(j, k, &mut buf);
        for i in 0..m {
            out[i * nb + (j - j0)] = dot(&x[i * k..(i + 1) * k], row);
        }
    }
    out
}

fn shape2(t: &Tensor<CpuBackend>, what: &str) -> Result<(usize, usize), BackendError> {
    match t.shape() {
        [a, b] => Ok((*a, *b)),
        s => Err(BackendError::Shape(format!("linear: {what} must be 2-D, got {s:?}"))),
    }
}

/// `y [m, n] = x [m, k] · w [n, k]ᵀ` on raw slices, in `pool`.
fn matmul_t(pool: &rayon::ThreadPool, x: &[f32], m: usize, k: usize, w: Weights<'_>, n: usize, y: &mut [f32]) {
    if m == 0 || n == 0 {
        return;
    }
    let blocks: Vec<(usize, Vec<f32>)> = pool.install(|| {
        (0..n.div_ceil(ROWS_PER_TASK))
            .into_par_iter()
            .map(|b| {
                let (j0, j1) = (b * ROWS_PER_TASK, ((b + 1) * ROWS_PER_TASK).min(n));
                (j0, block(x, m, k, w, j0, j1))
            })
            .collect()
    });
    for (j0, out) in blocks {
        let nb = out.len() / m;
        for i in 0..m {
            y[i * n + j0..i * n + j0 + nb].copy_from_slice(&out[i * nb..(i + 1) * nb]);
        }
    }
}

impl Gemm for CpuBackend {
    fn linear(
        &self,
        x: &Tensor<Self>,
        w: &Tensor<Self>,
        bias: Option<&Tensor<Self>>,
        y: &mut Tensor<Self>,
    ) -> Result<(), BackendError> {
        let (m, k) = shape2(x, "x")?;
        let (n, kw) = shape2(w, "w")?;
        if kw != k || y.shape() != [m, n] {
            return Err(BackendError::Shape(format!(
                "linear: x {:?} · w {:?}ᵀ does not fit y {:?}",
                x.shape(),
                w.shape(),
                y.shape()
            )));
        }
        let xs = x.buffer().as_f32("linear (x)")?;
        let ws = Weights::of(w.buffer())?;
        let b = match bias {
            Some(b) if b.numel() != n => return Err(BackendError::Shape(format!("linear: bias {:?} for {n} outputs", b.shape()))),
            Some(b) => Some(b.buffer().as_f32("linear (bias)")?.to_vec()),
            None => None,
        };
        let ys = y.buffer_mut().as_f32_mut("linear (y)")?;
        matmul_t(self.pool(), xs, m, k, ws, n, ys);
        if let Some(b) = b {
            for row in ys.chunks_exact_mut(n) {
                for (v, bv) in row.iter_mut().zip(&b) {
                    *v += bv;
                }
            }
        }
        Ok(())
    }

    fn batched_linear(&self, x: &Tensor<Self>, w: &Tensor<Self>, y: &mut Tensor<Self>) -> Result<(), BackendError> {
        let (bx, m, k) = match x.shape() {
            [a, b, c] => (*a, *b, *c),
            s => return Err(BackendError::Shape(format!("batched_linear: x must be 3-D, got {s:?}"))),
        };
        let (bw, n, kw) = match w.shape() {
            [a, b, c] => (*a, *b, *c),
            s => return Err(BackendError::Shape(format!("batched_linear: w must be 3-D, got {s:?}"))),
        };
        if bx != bw || kw != k || y.shape() != [bx, m, n] {
            return Err(BackendError::Shape(format!(
                "batched_linear: x {:?}, w {:?}, y {:?} do not fit",
                x.shape(),
                w.shape(),
                y.shape()
            )));
        }
        let xs = x.buffer().as_f32("batched_linear (x)")?;
        let ws = Weights::of(w.buffer())?;
        let ys = y.buffer_mut().as_f32_mut("batched_linear (y)")?;
        for b in 0..bx {
            let wb = match ws {
                Weights::F32(v) => Weights::F32(&v[b * n * k..(b + 1) * n * k]),
                Weights::BF16(v) => Weights::BF16(&v[b * n * k..(b + 1) * n * k]),
                Weights::F16(v) => Weights::F16(&v[b * n * k..(b + 1) * n * k]),
            };
            matmul_t(self.pool(), &xs[b * m * k..(b + 1) * m * k], m, k, wb, n, &mut ys[b * m * n..(b + 1) * m * n]);
        }
        Ok(())
    }
}
