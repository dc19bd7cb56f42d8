//! The reference block-format dot products: the fixed order of [`super`] in plain Rust, and
//! the same weights against f32 activations (the check that the kernels' integer form loses
//! only the activations' quantisation).

use finetp_core::backend::DType;
use finetp_core::backend::quant::block_ints;

use super::acts::ActRow;

/// The 8 lanes' final reduction, in the fixed order.
#[inline]
pub(crate) fn reduce(acc: [f32; 8]) -> f32 {
    let t4 = [acc[0] + acc[4], acc[1] + acc[5], acc[2] + acc[6], acc[3] + acc[7]];
    let t2 = [t4[0] + t4[2], t4[1] + t4[3]];
    t2[0] + t2[1]
}

/// `w · a` for one weight row `w` (whole blocks of `dtype`) and one quantised activation row.
pub(crate) fn dot(dtype: DType, w: &[u8], a: ActRow<'_>) -> f32 {
    let bb = dtype.block_bytes();
    let mut acc = [0f32; 8];
    let mut accm = 0f32;
    for (b, blk) in w.chunks_exact(bb).enumerate() {
        let (wq, dw, mw) = block_ints(dtype, blk);
        let aq = &a.q[b * 32..b * 32 + 32];
        let dd = dw * a.d[b];
        for (l, acc) in acc.iter_mut().enumerate() {
            let lane: i32 = (4 * l..4 * l + 4).map(|e| wq[e] * i32::from(aq[e])).sum();
            *acc = dd.mul_add(lane as f32, *acc);
        }
        if dtype == DType::Q4_1 {
            accm = mw.mul_add(a.s[b], accm);
        }
    }
    reduce(acc) + accm
}

/// `w · x` for one weight row against f32 activations `x` (no activation quantisation): per
/// block `dw · Σ wq·x (+ mw · Σx)`, in f64, so that it differs from dequantise-then-f32 only by
/// rounding.
#[cfg(test)]
pub(crate) fn dot_f32(dtype: DType, w: &[u8], x: &[f32]) -> f32 {
    let bb = dtype.block_bytes();
    let mut acc = 0f64;
    for (blk, xb) in w.chunks_exact(bb).zip(x.chunks_exact(32)) {
        let (wq, dw, mw) = block_ints(dtype, blk);
        let (mut sq, mut sx) = (0f64, 0f64);
        for (q, v) in wq.iter().zip(xb) {
            sq += f64::from(*q) * f64::from(*v);
            sx += f64::from(*v);
        }
        acc += f64::from(dw) * sq + f64::from(mw) * sx;
    }
    acc as f32
}
