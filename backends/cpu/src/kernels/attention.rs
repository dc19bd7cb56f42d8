//! The KV cache on the CPU: storing new rows, and causal GQA attention of every query row over
//! its own sequence's cached keys.
//!
//! One task per (query row, head): each owns its `dv` outputs in `y` (contiguous, so the pool
//! writes `y` directly), which parallelises decode (one row per sequence, many heads) and
//! prefill alike. The softmax subtracts the row maximum before `exp`, so large scores cannot
//! overflow.

use finetp_core::backend::checks::{self, AttentionDims};
use finetp_core::backend::{BackendError, PAD_SLOT, Tensor};
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
    slots: &'a [u32],
    positions: &'a [u32],
    scale: f32,
    nh: usize,
    nkv: usize,
    dk: usize,
    dv: usize,
    /// Cache rows per slot.
    len: usize,
}

/// Output row `idx = t·nh + h` into `out [dv]`; `scores` is scratch.
fn one(d: &Call<'_>, idx: usize, out: &mut [f32], scores: &mut Vec<f32>) {
    let (t, h) = (idx / d.nh, idx % d.nh);
    let slot = d.slots[t];
    if slot == PAD_SLOT {
        out.fill(0.0);
        return;
    }
    let kh = h / (d.nh / d.nkv);
    let n = d.positions[t] as usize + 1;
    let base = slot as usize * d.len * d.nkv;
    let (ks, vs) = (&d.ks[base * d.dk..], &d.vs[base * d.dv..]);
    let q = &d.qs[idx * d.dk..(idx + 1) * d.dk];
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

/// Every row's (slot, position) must address the cache, or be padding (the counts are checked
/// by `checks`; the values only the host-side CPU backend can read at call time).
fn check_rows(op: &str, slots: &[u32], positions: &[u32], [s, l, ..]: [usize; 4]) -> Result<(), BackendError> {
    for (i, (&slot, &p)) in slots.iter().zip(positions).enumerate() {
        if slot != PAD_SLOT && (slot as usize >= s || p as usize >= l) {
            return Err(BackendError::Shape(format!("{op}: row {i} addresses slot {slot} position {p} of a cache of {s} slots x {l} rows")));
        }
    }
    Ok(())
}

pub(super) fn kv_cache_write(
    x: &Tensor<CpuBackend>,
    cache: &mut Tensor<CpuBackend>,
    slots: &Tensor<CpuBackend>,
    positions: &Tensor<CpuBackend>,
) -> Result<(), BackendError> {
    let dims = checks::kv_cache_write(x, cache, slots, positions)?;
    let [_, l, n, d] = dims;
    let (slots, positions) = (slots.buffer().as_u32("kv_cache_write (slots)")?, positions.buffer().as_u32("kv_cache_write (positions)")?);
    check_rows("kv_cache_write", slots, positions, dims)?;
    let xs = x.buffer().as_f32("kv_cache_write (x)")?;
    let cs = cache.buffer_mut().as_f32_mut("kv_cache_write (cache)")?;
    let row = n * d;
    for (i, (&slot, &p)) in slots.iter().zip(positions).enumerate().filter(|(_, (s, _))| **s != PAD_SLOT) {
        let at = (slot as usize * l + p as usize) * row;
        cs[at..at + row].copy_from_slice(&xs[i * row..(i + 1) * row]);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(super) fn kv_cache_attention(
    be: &CpuBackend,
    q: &Tensor<CpuBackend>,
    k: &Tensor<CpuBackend>,
    v: &Tensor<CpuBackend>,
    slots: &Tensor<CpuBackend>,
    positions: &Tensor<CpuBackend>,
    scale: f32,
    y: &mut Tensor<CpuBackend>,
) -> Result<(), BackendError> {
    let AttentionDims { heads: nh, kv_heads: nkv, dk, dv, slots: s, len: l, .. } = checks::kv_cache_attention(q, k, v, slots, positions, y)?;
    let (slots, positions) = (slots.buffer().as_u32("kv_cache_attention (slots)")?, positions.buffer().as_u32("kv_cache_attention (positions)")?);
    check_rows("kv_cache_attention", slots, positions, [s, l, nkv, dk])?;
    let (qs, ks, vs) = (q.buffer().as_f32("kv_cache_attention (q)")?, k.buffer().as_f32("kv_cache_attention (k)")?, v.buffer().as_f32("kv_cache_attention (v)")?);
    let ys = y.buffer_mut().as_f32_mut("kv_cache_attention (y)")?;
    if ys.is_empty() {
        return Ok(());
    }
    let d = Call { qs, ks, vs, slots, positions, scale, nh, nkv, dk, dv, len: l };
    let keys: usize = slots.iter().zip(positions).filter(|(s, _)| **s != PAD_SLOT).map(|(_, p)| *p as usize + 1).sum();
    let macs = nh * keys * (dk + dv);
    if macs <= SERIAL_MACS || be.threads() == 1 {
        let mut scores = Vec::new();
        for (idx, out) in ys.chunks_exact_mut(dv).enumerate() {
            one(&d, idx, out, &mut scores);
        }
    } else {
        be.pool().install(|| {
            ys.par_chunks_exact_mut(dv).enumerate().for_each_init(Vec::new, |scores, (idx, out)| one(&d, idx, out, scores));
        });
    }
    Ok(())
}
