//! Per-row and element-wise kernels: embedding, RMSNorm, RoPE, SiLU·mul, add.

use finetp_core::backend::{BackendError, DType, RopeStyle, RopeTable, Tensor};

use super::{rows_cols, same_shape, want};
use crate::WgpuBackend;
use crate::buffer::{whole, window_binding, windows};
use crate::dispatch::Params;
use crate::shaders::{self, Stored};

type T = Tensor<WgpuBackend>;

/// Vocab-parallel lookup, one launch per window of the table (tables bigger than a binding
/// are split by rows); the first launch also writes the zeros of ids in other shards.
pub(super) fn embedding(be: &WgpuBackend, ids: &T, table: &T, row_start: usize, y: &mut T) -> Result<(), BackendError> {
    want(ids, DType::U32, "embedding (ids)")?;
    let (rows, h) = rows_cols(table, "embedding (table)")?;
    let caps = *be.caps();
    let stored = Stored::of(table.dtype(), &caps, "embedding (table)")?;
    let t = ids.numel();
    if y.shape() != [t, h] {
        return Err(BackendError::Shape(format!("embedding: {t} ids of width {h} into {:?}", y.shape())));
    }
    want(y, DType::F32, "embedding (y)")?;
    if t == 0 || h == 0 {
        return Ok(());
    }
    let k = be.kernel(&format!("embedding_{}", stored.tag()), || shaders::build(shaders::EMBEDDING, &caps, &[("w", 2, stored)]))?;
    let tb = table.buffer();
    let wins = if rows == 0 {
        vec![crate::buffer::Window { offset: 0, size: tb.buf.size(), first_row: 0, rows: 0, elem_off: 0 }]
    } else {
        windows(rows, h, table.dtype(), tb.buf.size(), &caps)?
    };
    // An id past u32 can never match, and a shard start past u32 matches no u32 id.
    let row_start = u32::try_from(row_start).unwrap_or(u32::MAX) as usize;
    let grid = be.grid(t * h)?;
    for (i, w) in wins.iter().enumerate() {
        let p = Params::new().u(t * h)?.u(h)?.u(row_start)?.u(rows)?.u(w.first_row)?.u(w.rows)?.u(w.elem_off as usize)?.u(usize::from(i == 0))?;
        let args = [whole(ids.buffer(), &caps, "embedding")?, window_binding(tb, w), whole(y.buffer(), &caps, "embedding")?];
        be.launch(&k, p, &args, grid)?;
    }
    Ok(())
}

pub(super) fn rms_norm(be: &WgpuBackend, x: &T, w: &T, eps: f32, y: &mut T) -> Result<(), BackendError> {
    let h = w.numel();
    same_shape("rms_norm", x.shape(), y.shape())?;
    if h == 0 || x.shape().last() != Some(&h) {
        return Err(BackendError::Shape(format!("rms_norm: weight of {h} elements for x {:?}", x.shape())));
    }
    want(x, DType::F32, "rms_norm (x)")?;
    want(y, DType::F32, "rms_norm (y)")?;
    let caps = *be.caps();
    let stored = Stored::of(w.dtype(), &caps, "rms_norm (w)")?;
    let rows = x.numel() / h;
    if rows == 0 {
        return Ok(());
    }
    let (acc, sum) = if caps.shader_f64 { ("f64", shaders::RMS_F64) } else { ("f32", shaders::RMS_F32) };
    let k = be.kernel(&format!("rms_norm_{}_{acc}", stored.tag()), || {
        shaders::build(&format!("{}\n{sum}", shaders::RMS_NORM), &caps, &[("w", 2, stored)])
    })?;
    let p = Params::new().u(rows)?.u(h)?.f(eps);
    let args = [whole(x.buffer(), &caps, "rms_norm")?, whole(w.buffer(), &caps, "rms_norm")?, whole(y.buffer(), &caps, "rms_norm")?];
    be.launch(&k, p, &args, be.grid(rows)?)
}

pub(super) fn rope(be: &WgpuBackend, x: &mut T, positions: &T, table: &RopeTable<WgpuBackend>) -> Result<(), BackendError> {
    let (inv_freq, style) = (&table.inv_freq, table.style);
    let (t, nh, d) = match x.shape() {
        [a, b, c] => (*a, *b, *c),
        s => return Err(BackendError::Shape(format!("rope: x must be [T, heads, head_dim], got {s:?}"))),
    };
    want(x, DType::F32, "rope (x)")?;
    want(positions, DType::U32, "rope (positions)")?;
    want(inv_freq, DType::F32, "rope (inv_freq)")?;
    let half = inv_freq.numel();
    if positions.numel() != t || 2 * half > d {
        return Err(BackendError::Shape(format!("rope: {} positions for {t} rows, rotary dim {} for head_dim {d}", positions.numel(), 2 * half)));
    }
    let n = t * nh * half;
    if n == 0 {
        return Ok(());
    }
    let caps = *be.caps();
    let k = be.kernel("rope", || shaders::build(shaders::ROPE, &caps, &[]))?;
    let p = Params::new().u(n)?.u(nh)?.u(d)?.u(half)?.u(usize::from(style == RopeStyle::Interleaved))?.f(table.attention_factor);
    let args = [whole(x.buffer(), &caps, "rope")?, whole(positions.buffer(), &caps, "rope")?, whole(inv_freq.buffer(), &caps, "rope")?];
    be.launch(&k, p, &args, be.grid(n)?)
}

pub(super) fn silu_mul(be: &WgpuBackend, gate_up: &T, y: &mut T) -> Result<(), BackendError> {
    let (t, i) = rows_cols(y, "silu_mul (y)")?;
    if gate_up.shape() != [t, 2 * i] {
        return Err(BackendError::Shape(format!("silu_mul: gate_up {:?} for output {:?}", gate_up.shape(), y.shape())));
    }
    want(gate_up, DType::F32, "silu_mul (gate_up)")?;
    want(y, DType::F32, "silu_mul (y)")?;
    if t * i == 0 {
        return Ok(());
    }
    let caps = *be.caps();
    let k = be.kernel("silu_mul", || shaders::build(shaders::SILU_MUL, &caps, &[]))?;
    let args = [whole(gate_up.buffer(), &caps, "silu_mul")?, whole(y.buffer(), &caps, "silu_mul")?];
    be.launch(&k, Params::new().u(t * i)?.u(i)?, &args, be.grid(t * i)?)
}

pub(super) fn add_assign(be: &WgpuBackend, a: &mut T, b: &T) -> Result<(), BackendError> {
    same_shape("add_assign", a.shape(), b.shape())?;
    want(a, DType::F32, "add_assign (a)")?;
    want(b, DType::F32, "add_assign (b)")?;
    let n = a.numel();
    if n == 0 {
        return Ok(());
    }
    let caps = *be.caps();
    let k = be.kernel("add", || shaders::build(shaders::ADD, &caps, &[]))?;
    let args = [whole(a.buffer(), &caps, "add_assign")?, whole(b.buffer(), &caps, "add_assign")?];
    be.launch(&k, Params::new().u(n)?, &args, be.grid(n)?)
}
