//! The KV cache on wgpu: storing new rows and causal GQA attention over them.
//!
//! Slots and positions are device tensors; rows that address outside the cache are found by
//! the kernels and reported at the next sync point (see `crate::status`).

use finetp_core::backend::checks::{self, AttentionDims};
use finetp_core::backend::{BackendError, DType, Tensor};

use super::want;
use crate::WgpuBackend;
use crate::buffer::whole;
use crate::dispatch::Params;
use crate::shaders;

type T = Tensor<WgpuBackend>;

/// Slots and positions are u32 (their counts are `checks`').
fn rows_of(op: &'static str, slots: &T, positions: &T) -> Result<(), BackendError> {
    want(slots, DType::U32, op)?;
    want(positions, DType::U32, op)
}

pub(super) fn kv_cache_write(be: &WgpuBackend, x: &T, cache: &mut T, slots: &T, positions: &T) -> Result<(), BackendError> {
    let [s, l, n, d] = checks::kv_cache_write(x, cache, slots, positions)?;
    let t = x.rows();
    want(x, DType::F32, "kv_cache_write (x)")?;
    want(cache, DType::F32, "kv_cache_write (cache)")?;
    rows_of("kv_cache_write (slots, positions)", slots, positions)?;
    let row = n * d;
    if t * row == 0 {
        return Ok(());
    }
    let caps = *be.caps();
    let k = be.kernel("kv_write", || shaders::build(shaders::KV_WRITE, &caps, &[]))?;
    let p = Params::new().u(t * row)?.u(row)?.u(s)?.u(l)?;
    let args = [
        whole(x.buffer(), &caps, "kv_cache_write")?,
        whole(cache.buffer(), &caps, "kv_cache_write")?,
        whole(slots.buffer(), &caps, "kv_cache_write")?,
        whole(positions.buffer(), &caps, "kv_cache_write")?,
        be.inner.status.buf.as_entire_binding(),
    ];
    be.launch(&k, p, &args, be.grid(t * row)?)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn kv_cache_attention(be: &WgpuBackend, q: &T, k: &T, v: &T, slots: &T, positions: &T, scale: f32, y: &mut T) -> Result<(), BackendError> {
    let AttentionDims { t, heads: nh, kv_heads: nkv, dk, dv, slots: s, len: l } = checks::kv_cache_attention(q, k, v, slots, positions, y)?;
    for (x, op) in [(q, "kv_cache_attention (q)"), (k, "kv_cache_attention (k)"), (v, "kv_cache_attention (v)"), (&*y, "kv_cache_attention (y)")] {
        want(x, DType::F32, op)?;
    }
    rows_of("kv_cache_attention (slots, positions)", slots, positions)?;
    if t * nh * dv == 0 {
        return Ok(());
    }
    let caps = *be.caps();
    let kern = be.kernel("attention", || shaders::build(shaders::ATTENTION, &caps, &[]))?;
    let p = Params::new().u(t * nh)?.u(nh)?.u(nkv)?.u(dk)?.u(dv)?.u(s)?.u(l)?.f(scale);
    let op = "kv_cache_attention";
    let args = [
        whole(q.buffer(), &caps, op)?,
        whole(k.buffer(), &caps, op)?,
        whole(v.buffer(), &caps, op)?,
        whole(slots.buffer(), &caps, op)?,
        whole(positions.buffer(), &caps, op)?,
        whole(y.buffer(), &caps, op)?,
        be.inner.status.buf.as_entire_binding(),
    ];
    be.launch(&kern, p, &args, be.grid(t * nh)?)
}
