//! GEMM for the CPU backend: `y = x · wᵀ (+ bias)` with f32, bf16 or f16 weights and f32
//! accumulation.
//!
//! Decode is memory-bound: every weight byte is read once per step, so the kernel is
//! weight-stationary and reads the weights as stored, once per call, widening 16-bit ones in
//! registers. The activations are packed once per call ([`pack`]) in groups of at most
//! [`MAX_TILE`] rows; a tile is `stream_rows(group)` weight rows × one group ([`tile`]), and
//! every tile of weight rows is used by all groups in turn, so the other groups find its
//! weights in L1:
//! - while the packed activations fit half the L2 (`m·k·4 <= ROW_OUTER_BYTES`, e.g. `m <= 32`
//!   at `k = 4096`): whole rows, end to end, while the next tile's rows are prefetched;
//! - larger `m`: one reduction block of `k` at a time across all the task's rows, so that the
//!   activations' block stays in L2, with the rows `PF_TILES` tiles ahead prefetched.
//!
//! Compute-bound shapes (`m` ≳ 16) reach about 60–75 % of the FMA peak this way; the
//! numbers are in `docs/perf.md`. Blocks of weight rows are spread over the rank's rayon pool.

mod pack;
pub(crate) mod quant;
mod tile;
mod weights;

use finetp_core::backend::{BackendError, Tensor};
use rayon::prelude::*;

use self::tile::{K_BLOCK, MAX_TILE, Out, Run, STEP, Src, pack_panel, pack_step_partial, run, stream_rows};
use self::weights::{Elem, Weights};
use crate::storage::{CpuBackend, CpuStorage};

pub(crate) use quant::keeps_blocks;

/// Activation rows per pass over the weights: their packed block (`m` × 2 KiB) stays in L2.
const M_BLOCK: usize = 256;
/// Up to this many bytes of packed activations (half the L2), a task walks its weight rows end
/// to end; above, reduction block by block (so that one block of the activations stays in L2).
const ROW_OUTER_BYTES: usize = 512 << 10;
/// Prefetch distance of the block-by-block walk, in tiles.
const PF_TILES: usize = 2;
/// Below this many multiply-adds a call runs on the calling thread (pool hand-off costs µs).
const SERIAL_MACS: usize = 1 << 16;

/// The activations of one call, packed in groups of at most [`MAX_TILE`] rows, as even as
/// possible ([`pack::pack_x`]).
struct Acts {
    data: Vec<f32>,
    m: usize,
    k: usize,
    group: usize,
}

impl Acts {
    fn new(x: &[f32], m: usize, k: usize, paired: bool) -> Self {
        let group = m.div_ceil(m.div_ceil(MAX_TILE).max(1)).max(1);
        Acts { data: pack::pack_x(x, m, k, group, paired), m, k, group }
    }

    /// Weight rows per tile, so per unit of work split.
    fn unit(&self) -> usize {
        stream_rows(self.group)
    }

    /// Floats from one group to the next.
    fn gstride(&self) -> usize {
        self.k.div_ceil(STEP) * self.group * STEP
    }

    /// The packed activations from group 0's element `k0` (a block start) on.
    fn from(&self, k0: usize) -> &[f32] {
        &self.data[k0 / STEP * self.group * STEP..]
    }
}

/// `out [m, j1 - j0]` (zeroed by the caller) `= x · w[j0..j1]ᵀ`, on the calling thread.
fn rows_block(a: &Acts, w: Weights<'_>, j0: usize, j1: usize, out: &mut [f32]) {
    if a.m == 0 || a.k == 0 || j1 <= j0 {
        return;
    }
    match w {
        Weights::F32(v) => rows_typed(a, v, j0, j1, out),
        Weights::BF16(v) => rows_typed(a, v, j0, j1, out),
        Weights::F16(v) => rows_typed(a, v, j0, j1, out),
    }
}

fn rows_typed<T: Elem>(a: &Acts, w: &[T], j0: usize, j1: usize, out: &mut [f32]) {
    let (m, k, nb) = (a.m, a.k, j1 - j0);
    let rr = a.unit();
    let (full, rest) = (nb / rr, nb % rr);
    let nblocks = k.div_ceil(K_BLOCK);
    let last_len = k - (nblocks - 1) * K_BLOCK;
    let bsteps = K_BLOCK / STEP;
    // The rows' zero-padded final steps, when `k` ends inside one.
    let tail: Option<Vec<f32>> = (!last_len.is_multiple_of(STEP)).then(|| {
        let mut t = vec![0f32; full * rr * STEP];
        for (r, d) in t.chunks_exact_mut(STEP).enumerate() {
            let row = (j0 + r) * k;
            pack_step_partial(&w[row + k - last_len % STEP..row + k], d);
        }
        t
    });
    let run_of = |k0: usize, blocks: usize, ahead: usize| {
        let last = k0 + blocks * K_BLOCK >= k;
        Run {
            w: Src::Direct { w, off: j0 * k + k0, stride: k },
            rows: rr,
            tiles: full,
            blocks,
            x: a.from(k0),
            gstride: a.gstride(),
            group: a.group,
            m,
            last_steps: if last { last_len / STEP } else { bsteps },
            tail: if last { tail.as_deref() } else { None },
            ahead,
        }
    };
    if full > 0 {
        let mut o = Out { out: &mut *out, nb, jr: 0, valid: full * rr };
        if m * k * size_of::<f32>() <= ROW_OUTER_BYTES {
            // Row by row, end to end, prefetching the next tile's rows.
            run(&run_of(0, nblocks, rr * k), &mut o);
        } else {
            // Block by block: the activations' block stays in cache while all the rows stream
            // past.
            for b in 0..nblocks {
                run(&run_of(b * K_BLOCK, 1, PF_TILES * rr * k), &mut o);
            }
        }
    }
    if rest > 0 {
        // The last rows of the range: widen them into a zero-padded panel per block.
        let jt = j0 + full * rr;
        let mut panel = vec![0f32; bsteps * rr * STEP];
        for b in 0..nblocks {
            let len = if b + 1 == nblocks { last_len } else { K_BLOCK };
            pack_panel(w, jt * k + b * K_BLOCK, k, rest, len, rr, &mut panel);
            let r: Run<'_, T> = Run {
                w: Src::Packed { p: &panel, panel_rows: rr },
                rows: rr,
                tiles: 1,
                blocks: 1,
                x: a.from(b * K_BLOCK),
                gstride: a.gstride(),
                group: a.group,
                m,
                last_steps: len.div_ceil(STEP),
                tail: None,
                ahead: 0,
            };
            run(&r, &mut Out { out: &mut *out, nb, jr: full * rr, valid: rest });
        }
    }
}

/// Weight rows per task: about four tasks per thread for balance, a multiple of `unit` (rows
/// per tile), and at least 16 rows so that a task's setup stays negligible.
fn rows_per_task(n: usize, threads: usize, unit: usize) -> usize {
    (n.div_ceil(4 * threads.max(1))).clamp(16, 256).next_multiple_of(unit)
}

/// `y [m, n] = x [m, k] · w [n, k]ᵀ` on raw slices, in `pool`.
fn matmul_t(pool: &rayon::ThreadPool, x: &[f32], m: usize, k: usize, w: Weights<'_>, n: usize, y: &mut [f32]) {
    if m == 0 || n == 0 {
        return;
    }
    if m > M_BLOCK {
        for i0 in (0..m).step_by(M_BLOCK) {
            let i1 = (i0 + M_BLOCK).min(m);
            matmul_t(pool, &x[i0 * k..i1 * k], i1 - i0, k, w, n, &mut y[i0 * n..i1 * n]);
        }
        return;
    }
    let a = Acts::new(x, m, k, w.paired());
    if m * n * k <= SERIAL_MACS || pool.current_num_threads() == 1 {
        y.fill(0.0);
        return rows_block(&a, w, 0, n, y);
    }
    let nb = rows_per_task(n, pool.current_num_threads(), a.unit());
    by_column_blocks(pool, m, n, nb, y, |j0, j1, out| rows_block(&a, w, j0, j1, out));
}

/// `y [m, n]` computed in blocks of `per` output columns on `pool`: `f(j0, j1, out)` fills
/// `out [m, j1 - j0]` (zeroed) with columns `j0..j1`, and the blocks are copied into place.
pub(crate) fn by_column_blocks(pool: &rayon::ThreadPool, m: usize, n: usize, per: usize, y: &mut [f32], f: impl Fn(usize, usize, &mut [f32]) + Sync) {
    let blocks: Vec<(usize, Vec<f32>)> = pool.install(|| {
        (0..n.div_ceil(per))
            .into_par_iter()
            .map(|b| {
                let (j0, j1) = (b * per, ((b + 1) * per).min(n));
                let mut out = vec![0f32; m * (j1 - j0)];
                f(j0, j1, &mut out);
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
        let b = match bias {
            Some(b) if b.numel() != n || b.shape().len() > 2 => {
                return Err(BackendError::Shape(format!("linear: bias {:?} for {n} outputs", b.shape())));
            }
            Some(b) => Some(b.buffer().as_f32("linear (bias)")?),
            None => None,
        };
        let ys = y.buffer_mut().as_f32_mut("linear (y)")?;
        match w.buffer() {
            CpuStorage::Blocks { dtype, bytes } if keeps_blocks(*dtype) => {
                let row_bytes = dtype.storage_bytes(k).ok_or_else(|| BackendError::Shape(format!("linear: {dtype} rows of {k} are not whole blocks")))?;
                let qw = quant::QWeights { dtype: *dtype, bytes, row_bytes };
                quant::matmul_q(self.pool(), quant::selected_isa()?, &quant::QActs::new(xs, m, k, *dtype), qw, n, ys);
            }
            s => matmul_t(self.pool(), xs, m, k, Weights::of(s, "linear (w)")?, n, ys),
        }
        if let Some(b) = b {
            for row in ys.chunks_exact_mut(n.max(1)) {
                for (v, bv) in row.iter_mut().zip(b) {
                    *v += bv;
                }
            }
        }
        Ok(())
    }
}
