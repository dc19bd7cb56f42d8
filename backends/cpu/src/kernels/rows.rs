//! Per-row and element-wise kernels: embedding, RMSNorm, RoPE, SiLU·mul, add.

use finetp_core::backend::{BackendError, RopeStyle, Tensor};
use rayon::prelude::*;

use super::{PARALLEL_MIN, float_expected, rows_cols, same_shape, widen_into};
use crate::storage::CpuBackend;

/// Runs `f` over matching `n`-element chunks of `a` and `b`, on the pool when there is enough.
fn per_row<A: Sync, B: Send>(be: &CpuBackend, a: &[A], an: usize, b: &mut [B], bn: usize, f: impl Fn(usize, &[A], &mut [B]) + Sync) {
    if an == 0 || bn == 0 {
        return;
    }
    if a.len().max(b.len()) >= PARALLEL_MIN && be.threads() > 1 {
        be.pool().install(|| a.par_chunks(an).zip(b.par_chunks_mut(bn)).enumerate().for_each(|(i, (a, b))| f(i, a, b)));
    } else {
        a.chunks(an).zip(b.chunks_mut(bn)).enumerate().for_each(|(i, (a, b))| f(i, a, b));
    }
}

/// A lookup is one copy per row: not worth the pool, so `_be` is unused.
pub(super) fn embedding(
    _be: &CpuBackend,
    ids: &Tensor<CpuBackend>,
    table: &Tensor<CpuBackend>,
    row_start: usize,
    y: &mut Tensor<CpuBackend>,
) -> Result<(), BackendError> {
    let ids = ids.buffer().as_u32("embedding (ids)")?;
    let (rows, h) = rows_cols(table, "embedding (table)")?;
    if !table.dtype().is_float() && !table.dtype().is_quantized() {
        return Err(float_expected("embedding (table)"));
    }
    if y.shape() != [ids.len(), h] {
        return Err(BackendError::Shape(format!("embedding: {} ids of width {h} into {:?}", ids.len(), y.shape())));
    }
    let tab = table.buffer();
    let out = y.buffer_mut().as_f32_mut("embedding (y)")?;
    for (&id, dst) in ids.iter().zip(out.chunks_exact_mut(h.max(1))) {
        match (id as usize).checked_sub(row_start).filter(|&r| r < rows) {
            Some(r) => widen_into(tab, "embedding (table)", r * h, dst)?,
            None => dst.fill(0.0),
        }
    }
    Ok(())
}

pub(super) fn rms_norm(
    be: &CpuBackend,
    x: &Tensor<CpuBackend>,
    w: &Tensor<CpuBackend>,
    eps: f32,
    y: &mut Tensor<CpuBackend>,
) -> Result<(), BackendError> {
    let h = w.numel();
    same_shape("rms_norm", x.shape(), y.shape())?;
    if h == 0 || x.shape().last() != Some(&h) {
        return Err(BackendError::Shape(format!("rms_norm: weight of {h} elements for x {:?}", x.shape())));
    }
    let mut wv = vec![0f32; h];
    widen_into(w.buffer(), "rms_norm (w)", 0, &mut wv)?;
    let xs = x.buffer().as_f32("rms_norm (x)")?;
    let ys = y.buffer_mut().as_f32_mut("rms_norm (y)")?;
    per_row(be, xs, h, ys, h, |_, xr, yr| {
        // Sum of squares in f64: exact enough that the norm never depends on the row length.
        let ms = xr.iter().map(|v| f64::from(*v) * f64::from(*v)).sum::<f64>() / h as f64;
        let inv = (1.0 / (ms + f64::from(eps)).sqrt()) as f32;
        for ((o, v), g) in yr.iter_mut().zip(xr).zip(&wv) {
            *o = v * inv * g;
        }
    });
    Ok(())
}

pub(super) fn rope(
    be: &CpuBackend,
    x: &mut Tensor<CpuBackend>,
    positions: &Tensor<CpuBackend>,
    inv_freq: &Tensor<CpuBackend>,
    (style, factor): (RopeStyle, f32),
) -> Result<(), BackendError> {
    let (t, nh, d) = match x.shape() {
        [a, b, c] => (*a, *b, *c),
        s => return Err(BackendError::Shape(format!("rope: x must be [T, heads, head_dim], got {s:?}"))),
    };
    let positions = positions.buffer().as_u32("rope (positions)")?;
    let inv_freq = inv_freq.buffer().as_f32("rope (inv_freq)")?;
    let half = inv_freq.len();
    if positions.len() != t || 2 * half > d {
        return Err(BackendError::Shape(format!(
            "rope: {} positions for {t} rows, rotary dim {} for head_dim {d}",
            positions.len(),
            2 * half
        )));
    }
    let xs = x.buffer_mut().as_f32_mut("rope (x)")?;
    // Angles in f32, as the HF reference computes them (`position * inv_freq` rounded to f32);
    // cos and sin times the attention factor, as HF scales them (exact for a factor of 1).
    per_row(be, positions, 1, xs, nh * d, |_, p, row| {
        let (sin, cos): (Vec<f32>, Vec<f32>) = inv_freq
            .iter()
            .map(|f| {
                let (s, c) = (p[0] as f32 * f).sin_cos();
                (s * factor, c * factor)
            })
            .unzip();
        for v in row.chunks_exact_mut(d) {
            for i in 0..half {
                let (a, b) = match style {
                    RopeStyle::Neox => (i, i + half),
                    RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                };
                let (x0, x1) = (v[a], v[b]);
                v[a] = x0 * cos[i] - x1 * sin[i];
                v[b] = x0 * sin[i] + x1 * cos[i];
            }
        }
    });
    Ok(())
}

pub(super) fn silu_mul(be: &CpuBackend, gate_up: &Tensor<CpuBackend>, y: &mut Tensor<CpuBackend>) -> Result<(), BackendError> {
    let (t, i) = rows_cols(y, "silu_mul (y)")?;
    if gate_up.shape() != [t, 2 * i] {
        return Err(BackendError::Shape(format!("silu_mul: gate_up {:?} for output {:?}", gate_up.shape(), y.shape())));
    }
    let g = gate_up.buffer().as_f32("silu_mul (gate_up)")?;
    let out = y.buffer_mut().as_f32_mut("silu_mul (y)")?;
    per_row(be, g, 2 * i, out, i, |_, gu, o| {
        let (gate, up) = gu.split_at(i);
        for ((o, a), b) in o.iter_mut().zip(gate).zip(up) {
            *o = a / (1.0 + (-a).exp()) * b;
        }
    });
    Ok(())
}

/// Chunk length for element-wise ops: one chunk per pool task.
const ELEMENTWISE_CHUNK: usize = 1 << 14;

pub(super) fn add_assign(be: &CpuBackend, a: &mut Tensor<CpuBackend>, b: &Tensor<CpuBackend>) -> Result<(), BackendError> {
    same_shape("add_assign", a.shape(), b.shape())?;
    let bs = b.buffer().as_f32("add_assign (b)")?;
    let as_ = a.buffer_mut().as_f32_mut("add_assign (a)")?;
    per_row(be, bs, ELEMENTWISE_CHUNK, as_, ELEMENTWISE_CHUNK, |_, b, a| {
        for (x, y) in a.iter_mut().zip(b) {
            *x += y;
        }
    });
    Ok(())
}
