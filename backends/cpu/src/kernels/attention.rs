//! Causal GQA attention of one sequence over its KV cache.
//!
//! One task per (query row, head): each owns its `dv` outputs in `y` (contiguous, so the pool
//! writes `y` directly), which parallelises decode (one row, many heads) and prefill alike.
//! The softmax subtracts the row maximum before `exp`, so large scores cannot overflow.

use finetp_core::backend::{BackendError, Tensor};
use rayon::prelude::*;

use crate::storage::CpuBackend;

/// Multiply-adds below which attention stays on the calling thread.
const SERIAL_MACS: usize = 1 << 15;

/// `Σ a[i]·b[i]` with 8 independent partial sums, so it vectorises.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The operands and shapes of one attention call.
struct Call<'a> {
    qs: &'a [f32],
    ks: &'a [f32],
    vs: &'a [f32],
    scale: f32,
    nh: usize,
    nkv: usize,
    dk: usize,
    dv: usize,
    past: usize,
}

/// Output row `idx = t·nh + h` into `out [dv]`; `scores` is scratch of at least `past + t + 1`.
fn one(d: &Call<'_>, idx: usize, out: &mut [f32], scores: &mut Vec<f32>) {
    let (qs, ks, vs) = (d.qs, d.ks, d.vs);
    let (t, h) = (idx / d.nh, idx % d.nh);
    let kh = h / (d.nh / d.nkv);
    let n = d.past + t + 1;
    let q = &qs[idx * d.dk..(idx + 1) * d.dk];
    scores.clear();
    scores.extend((0..n).map(|j| dot(q, &ks[(j * d.nkv + kh) * d.dk..][..d.dk]) * d.scale));
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    out.fill(0.0);
    for (j, p) in scores.iter().enumerate() {
        for (o, v) in out.iter_mut().zip(&vs[(j * d.nkv + kh) * d.dv..][..d.dv]) {
            *o += p * v;
        }
    }
    let inv = 1.0 / sum;
    out.iter_mut().for_each(|o| *o *= inv);
}

pub(super) fn attention(
    be: &CpuBackend,
    q: &Tensor<CpuBackend>,
    k: &Tensor<CpuBackend>,
    v: &Tensor<CpuBackend>,
    past: usize,
    scale: f32,
    y: &mut Tensor<CpuBackend>,
) -> Result<(), BackendError> {
    let bad = |why: &str| {
        BackendError::Shape(format!(
            "attention: q {:?}, k {:?}, v {:?}, y {:?}, past {past}: {why}",
            q.shape(),
            k.shape(),
            v.shape(),
            y.shape()
        ))
    };
    let ([t, nh, dk], [s, nkv, dk2], [s2, nkv2, dv]) = (q.shape(), k.shape(), v.shape()) else {
        return Err(bad("q, k and v must be 3-D"));
    };
    let (t, nh, dk, s, nkv, dv) = (*t, *nh, *dk, *s, *nkv, *dv);
    if dk != *dk2 || s != *s2 || nkv != *nkv2 {
        return Err(bad("k and v do not match q"));
    }
    if nkv == 0 || nh % nkv != 0 {
        return Err(bad("query heads must be a multiple of kv heads"));
    }
    if s < past + t {
        return Err(bad("the cache holds fewer than past + T rows"));
    }
    if y.shape() != [t, nh, dv] {
        return Err(bad("y must be [T, heads, dv]"));
    }
    let (qs, ks, vs) = (q.buffer().as_f32("attention (q)")?, k.buffer().as_f32("attention (k)")?, v.buffer().as_f32("attention (v)")?);
    let ys = y.buffer_mut().as_f32_mut("attention (y)")?;
    if ys.is_empty() {
        return Ok(());
    }
    let d = Call { qs, ks, vs, scale, nh, nkv, dk, dv, past };
    let macs = t * nh * (past + t) * (dk + dv);
    if macs <= SERIAL_MACS || be.threads() == 1 {
        let mut scores = Vec::with_capacity(past + t);
        for (idx, out) in ys.chunks_exact_mut(dv).enumerate() {
            one(&d, idx, out, &mut scores);
        }
    } else {
        be.pool().install(|| {
            ys.par_chunks_exact_mut(dv)
                .enumerate()
                .for_each_init(|| Vec::with_capacity(past + t), |scores, (idx, out)| one(&d, idx, out, scores));
        });
    }
    Ok(())
}
