//! GEMM with block-format weights (`Q8_0`, `Q4_0`, `Q4_1`, GGUF's layouts) read as stored:
//! `y [m, n] = x [m, k] · w [n, k]ᵀ` where each weight row is `k / 32` blocks.
//!
//! The activations are quantised per block of 32 as llama.cpp does for these formats
//! ([`QActs`]: `d = max|x| / 127`, `q = round(x / d)`, and for `Q4_1` also `s = d · Σq`), so
//! that a block's dot product is an exact integer sum: `dw · da · Σ wq·aq` (+ `mw · s` for
//! `Q4_1`, whose weights are `dw · q + mw`).
//!
//! Every path computes each output the same way (the *fixed order*, written out in
//! [`scalar::dot`], the reference): a block's 32 integer products are summed in 8 lanes of 4
//! adjacent elements; lane `l` of an f32 accumulator takes `fma(dw·da, lane_l, acc_l)` block
//! after block, the `Q4_1` minimum term its own `fma(mw, s, accm)`; at the end the lanes are
//! reduced as `((a0+a4) + (a2+a6)) + ((a1+a5) + (a3+a7))` and `accm` is added. The integer sums
//! are exact, so the SIMD paths ([`x86`]) equal the scalar one bit for bit, whatever the
//! tiling, the split across threads or a column shard's position.
//!
//! Which path runs is detected once (AVX-512 VNNI, AVX-VNNI, AVX2, else scalar); the
//! environment variable `FINETP_CPU_ISA` (`scalar`, `avx2`, `avxvnni`, `avx512vnni`) forces
//! one, so CI runs each path the machine has.

mod acts;
mod isa;
pub(crate) mod scalar;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86;

use finetp_core::backend::{BackendError, DType};

pub(crate) use acts::QActs;
pub(crate) use isa::{Isa, MAX_ACT_ROWS};

/// The block formats this backend multiplies by directly.
pub(crate) fn keeps_blocks(dtype: DType) -> bool {
    matches!(dtype, DType::Q8_0 | DType::Q4_0 | DType::Q4_1)
}

/// Weight rows computed together: they share each activation block's loads, and their
/// accumulators are independent chains.
pub(crate) const TILE_ROWS: usize = 4;
/// Activation rows per pass over a tile of weight rows (their quantised blocks stay in L2).
const M_CHUNK: usize = 64;
/// Below this many multiply-adds a call runs on the calling thread.
const SERIAL_MACS: usize = 1 << 16;

/// A `[n, k]` weight matrix of whole blocks, as stored.
#[derive(Clone, Copy)]
pub(crate) struct QWeights<'a> {
    pub(crate) dtype: DType,
    pub(crate) bytes: &'a [u8],
    pub(crate) row_bytes: usize,
}

/// `out[i, r] = w[j0 + r] · x[i]` for the `r < j1 - j0` rows of a range, all `m` rows of `a`;
/// `out` is `[m, j1 - j0]`.
fn rows_block(isa: Isa, w: QWeights<'_>, a: &QActs, j0: usize, j1: usize, out: &mut [f32]) {
    let nb = j1 - j0;
    for i0 in (0..a.m).step_by(M_CHUNK) {
        let i1 = (i0 + M_CHUNK).min(a.m);
        for t0 in (j0..j1).step_by(TILE_ROWS) {
            let rows = (j1 - t0).min(TILE_ROWS);
            let tile = &w.bytes[t0 * w.row_bytes..(t0 + rows) * w.row_bytes];
            // Whole tiles against several activation rows at once where the path has a kernel
            // for it (the same bits as one row at a time); the rest one row at a time.
            let mut i = i0;
            if rows == TILE_ROWS {
                while i + isa.act_rows() <= i1 && isa.act_rows() > 1 {
                    let mut r = [[0f32; TILE_ROWS]; MAX_ACT_ROWS];
                    isa.dots_rows(w.dtype, tile, w.row_bytes, a, i, &mut r);
                    for (di, ri) in r.iter().enumerate().take(isa.act_rows()) {
                        out[(i + di) * nb + t0 - j0..][..TILE_ROWS].copy_from_slice(ri);
                    }
                    i += isa.act_rows();
                }
            }
            for i in i..i1 {
                let mut r = [0f32; TILE_ROWS];
                isa.dots(w.dtype, tile, w.row_bytes, rows, a.row(i), &mut r);
                out[i * nb + t0 - j0..i * nb + t0 - j0 + rows].copy_from_slice(&r[..rows]);
            }
        }
    }
}

/// `y [m, n] = a · wᵀ` for activations `a` quantised for `w` ([`QActs::new`]), on `pool`,
/// with the path `isa`.
pub(crate) fn matmul_q(pool: &rayon::ThreadPool, isa: Isa, a: &QActs, w: QWeights<'_>, n: usize, y: &mut [f32]) {
    let (m, k) = (a.m, w.row_bytes / w.dtype.block_bytes() * 32);
    if m == 0 || n == 0 {
        return;
    }
    let threads = pool.current_num_threads();
    if m * n * k <= SERIAL_MACS || threads == 1 {
        return rows_block(isa, w, a, 0, n, y);
    }
    // About four tasks per thread, in whole tiles.
    let per = n.div_ceil(4 * threads).clamp(16, 512).next_multiple_of(TILE_ROWS);
    super::by_column_blocks(pool, m, n, per, y, |j0, j1, out| rows_block(isa, w, a, j0, j1, out));
}

/// The path to run: forced by `FINETP_CPU_ISA`, else the best the CPU has (detected once).
///
/// # Errors
/// `FINETP_CPU_ISA` names no path, or one this CPU cannot run.
pub(crate) fn selected_isa() -> Result<Isa, BackendError> {
    static SEL: std::sync::OnceLock<Result<Isa, String>> = std::sync::OnceLock::new();
    SEL.get_or_init(|| match std::env::var("FINETP_CPU_ISA") {
        Ok(v) => Isa::forced(&v),
        Err(_) => Ok(Isa::best()),
    })
    .clone()
    .map_err(BackendError::Unsupported)
}
