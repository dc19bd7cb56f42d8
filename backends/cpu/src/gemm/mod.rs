//! GEMM for the CPU backend: `y = x · wᵀ (+ bias)` with f32, bf16 or f16 weights and f32
//! accumulation.
//!
//! Decode is memory-bound: every weight byte is read once per step, so the kernel is
//! weight-stationary. Each task owns a block of weight rows and computes every output column of
//! that block for all activation rows, `R` weight rows × `C` activation rows at a time
//! ([`tile`]):
//! - `m <= C` (decode): one tile covers all activation rows, so each weight row is streamed once,
//!   end to end, widened in registers if 16-bit, while the next rows are prefetched.
//! - `m > C` (batched decode, prefill): compute-bound. `k` is cut into L1-sized panels, each
//!   (widened once if 16-bit) reused by every group of `C` activation rows; for
//!   `m <= M_BLOCK` the weights are still read from memory only once.
//!
//! Blocks of weight rows are spread over the rank's rayon pool.

mod tile;
mod weights;

use finetp_core::backend::{BackendError, Tensor};
use rayon::prelude::*;

use self::tile::{C, K_BLOCK, R, tile};
use self::weights::{Elem, Weights};
use crate::storage::CpuBackend;

/// Activation rows per pass over a weight block: their k-block (256 KiB) stays in L2.
const M_BLOCK: usize = 64;
/// Below this many multiply-adds a call runs on the calling thread (pool hand-off costs µs).
const SERIAL_MACS: usize = 1 << 16;

/// `out [m, j1 - j0]` (zeroed by the caller) `= x [m, k] · w[j0..j1]ᵀ`, on the calling thread.
fn block(x: &[f32], m: usize, k: usize, w: Weights<'_>, j0: usize, j1: usize, out: &mut [f32]) {
    match w {
        Weights::F32(v) => block_typed(x, m, k, v, j0, j1, out),
        Weights::BF16(v) => block_typed(x, m, k, v, j0, j1, out),
        Weights::F16(v) => block_typed(x, m, k, v, j0, j1, out),
    }
}

fn block_typed<T: Elem>(x: &[f32], m: usize, k: usize, w: &[T], j0: usize, j1: usize, out: &mut [f32]) {
    let nb = j1 - j0;
    let rows_at = |j: usize, rows: usize, k0: usize, len: usize| -> [&[T]; R] {
        std::array::from_fn(|r| if r < rows { &w[(j + r) * k + k0..][..len] } else { &[][..] })
    };
    let x_at = |i: usize, cols: usize, k0: usize, len: usize| -> [&[f32]; C] {
        std::array::from_fn(|c| if c < cols { &x[(i + c) * k + k0..][..len] } else { &[][..] })
    };
    let mut acc = [[0f32; R]; C];
    if m <= C {
        // One tile covers every activation row: the call is memory-bound and each weight is used
        // once. Stream whole rows, widen 16-bit weights in registers, and prefetch the next `R`
        // rows into L2 while these are multiplied, so their memory latency overlaps the FMAs.
        for j in (j0..j1).step_by(R) {
            let rows = R.min(j1 - j);
            let ahead = if j + 2 * R <= j1 { R * k } else { 0 };
            tile(&rows_at(j, rows, 0, k), rows, &x_at(0, m, 0, k), m, k, ahead, &mut acc);
            for (c, a) in acc.iter().enumerate().take(m) {
                out[c * nb + (j - j0)..][..rows].copy_from_slice(&a[..rows]);
            }
        }
        return;
    }
    // Several tiles of activation rows: compute-bound. Cut `k` into L1-sized panels, widen each
    // 16-bit panel once into `buf`, and let every group of `C` rows reuse it.
    let mut buf = vec![0f32; if T::IS_F32 { 0 } else { R * K_BLOCK.min(k) }];
    for i0 in (0..m).step_by(M_BLOCK) {
        let i1 = (i0 + M_BLOCK).min(m);
        for j in (j0..j1).step_by(R) {
            let rows = R.min(j1 - j);
            for k0 in (0..k).step_by(K_BLOCK) {
                let len = K_BLOCK.min(k - k0);
                let raw = rows_at(j, rows, k0, len);
                if !T::IS_F32 {
                    for (r, dst) in buf.chunks_exact_mut(len).take(rows).enumerate() {
                        T::widen(raw[r], dst);
                    }
                }
                let wide: [&[f32]; R] = std::array::from_fn(|r| if r < rows && !T::IS_F32 { &buf[r * len..][..len] } else { &[][..] });
                for i in (i0..i1).step_by(C) {
                    let cols = C.min(i1 - i);
                    let xp = x_at(i, cols, k0, len);
                    if T::IS_F32 {
                        tile(&raw, rows, &xp, cols, len, 0, &mut acc);
                    } else {
                        tile(&wide, rows, &xp, cols, len, 0, &mut acc);
                    }
                    for (c, a) in acc.iter().enumerate().take(cols) {
                        for (o, a) in out[(i + c) * nb + (j - j0)..][..rows].iter_mut().zip(a) {
                            *o += a;
                        }
                    }
                }
            }
        }
    }
}

/// Weight rows per task: about four tasks per thread for balance, a multiple of `R`, and at
/// least 16 rows so that a task's setup stays negligible.
fn rows_per_task(n: usize, threads: usize) -> usize {
    (n.div_ceil(4 * threads.max(1))).clamp(16, 256).next_multiple_of(R)
}

/// `y [m, n] = x [m, k] · w [n, k]ᵀ` on raw slices, in `pool`.
fn matmul_t(pool: &rayon::ThreadPool, x: &[f32], m: usize, k: usize, w: Weights<'_>, n: usize, y: &mut [f32]) {
    if m == 0 || n == 0 {
        return;
    }
    if m * n * k <= SERIAL_MACS || pool.current_num_threads() == 1 {
        y.fill(0.0);
        return block(x, m, k, w, 0, n, y);
    }
    let nb = rows_per_task(n, pool.current_num_threads());
    let blocks: Vec<(usize, Vec<f32>)> = pool.install(|| {
        (0..n.div_ceil(nb))
            .into_par_iter()
            .map(|b| {
                let (j0, j1) = (b * nb, ((b + 1) * nb).min(n));
                let mut out = vec![0f32; m * (j1 - j0)];
                block(x, m, k, w, j0, j1, &mut out);
                (j0, out)
            })
            .collect()
    });
    for (j0, out) in blocks {
        let w = out.len() / m;
        for (yr, or) in y.chunks_exact_mut(n).zip(out.chunks_exact(w)) {
            yr[j0..j0 + w].copy_from_slice(or);
        }
    }
}

/// The dims of a tensor that must have exactly `N` of them.
fn dims<const N: usize>(t: &Tensor<CpuBackend>, op: &str, what: &str) -> Result<[usize; N], BackendError> {
    t.shape().try_into().map_err(|_| BackendError::Shape(format!("{op}: {what} must be {N}-D, got {:?}", t.shape())))
}

// The `Gemm` impl (capture-aware) is in `crate::gemm_ops`; these run a call at once.
impl CpuBackend {
    pub(crate) fn linear_now(
        &self,
        x: &Tensor<Self>,
        w: &Tensor<Self>,
        bias: Option<&Tensor<Self>>,
        y: &mut Tensor<Self>,
    ) -> Result<(), BackendError> {
        let [m, k] = dims(x, "linear", "x")?;
        let [n, kw] = dims(w, "linear", "w")?;
        if kw != k || y.shape() != [m, n] {
            return Err(BackendError::Shape(format!(
                "linear: x {:?} · w {:?}ᵀ does not fit y {:?}",
                x.shape(),
                w.shape(),
                y.shape()
            )));
        }
        let xs = x.buffer().as_f32("linear (x)")?;
        let ws = Weights::of(w.buffer(), "linear (w)")?;
        let b = match bias {
            Some(b) if b.numel() != n || b.shape().len() > 2 => {
                return Err(BackendError::Shape(format!("linear: bias {:?} for {n} outputs", b.shape())));
            }
            Some(b) => Some(b.buffer().as_f32("linear (bias)")?),
            None => None,
        };
        let ys = y.buffer_mut().as_f32_mut("linear (y)")?;
        matmul_t(self.pool(), xs, m, k, ws, n, ys);
        if let Some(b) = b {
            for row in ys.chunks_exact_mut(n.max(1)) {
                for (v, bv) in row.iter_mut().zip(b) {
                    *v += bv;
                }
            }
        }
        Ok(())
    }

    pub(crate) fn batched_linear_now(&self, x: &Tensor<Self>, w: &Tensor<Self>, y: &mut Tensor<Self>) -> Result<(), BackendError> {
        let [bx, m, k] = dims(x, "batched_linear", "x")?;
        let [bw, n, kw] = dims(w, "batched_linear", "w")?;
        if bx != bw || kw != k || y.shape() != [bx, m, n] {
            return Err(BackendError::Shape(format!(
                "batched_linear: x {:?}, w {:?}, y {:?} do not fit",
                x.shape(),
                w.shape(),
                y.shape()
            )));
        }
        let xs = x.buffer().as_f32("batched_linear (x)")?;
        let ws = Weights::of(w.buffer(), "batched_linear (w)")?;
        let ys = y.buffer_mut().as_f32_mut("batched_linear (y)")?;
        if m == 0 || n == 0 {
            return Ok(());
        }
        let one = |(b, yb): (usize, &mut [f32])| {
            yb.fill(0.0);
            block(&xs[b * m * k..(b + 1) * m * k], m, k, ws.slice(b * n * k..(b + 1) * n * k), 0, n, yb);
        };
        if bx >= 2 * self.threads() {
            // Many small products (MLA's per-head projections): one task per batch entry.
            self.pool().install(|| ys.par_chunks_exact_mut(m * n).enumerate().for_each(one));
        } else {
            for b in 0..bx {
                let wb = ws.slice(b * n * k..(b + 1) * n * k);
                matmul_t(self.pool(), &xs[b * m * k..(b + 1) * m * k], m, k, wb, n, &mut ys[b * m * n..(b + 1) * m * n]);
            }
        }
        Ok(())
    }
}
