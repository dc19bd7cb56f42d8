//! The paged KV cache on wgpu: storing new rows and causal GQA attention over them.
//!
//! Block tables, slots and positions are device tensors; rows that address outside the cache
//! are found by the kernels and reported at the next sync point (see `crate::status`).

use finetp_core::backend::checks::{self, AttentionDims, CacheDims};
use finetp_core::backend::{AttentionParams, BackendError, DType, KvIndex, Tensor};

use super::want;
use crate::WgpuBackend;
use crate::buffer::whole;
use crate::dispatch::Params;
use crate::shaders;

type T = Tensor<WgpuBackend>;

pub(super) fn kv_cache_write(be: &WgpuBackend, x: &T, cache: &mut T, index: &KvIndex<'_, WgpuBackend>) -> Result<(), BackendError> {
    let CacheDims { blocks, block_size, heads, dim, seqs, max_blocks } = checks::kv_cache_write(x, cache, index)?;
    let t = x.rows();
    want(x, DType::F32, "kv_cache_write (x)")?;
    want(cache, DType::F32, "kv_cache_write (cache)")?;
    let row = heads * dim;
    if t * row == 0 {
        return Ok(());
    }
    let caps = *be.caps();
    let k = be.kernel("kv_write", || shaders::build(shaders::KV_WRITE, &caps, &[]))?;
    let p = Params::new().u(t * row)?.u(row)?.u(seqs)?.u(max_blocks)?.u(block_size)?.u(blocks)?;
    let op = "kv_cache_write";
    let args = [
        whole(x.buffer(), &caps, op)?,
        whole(cache.buffer(), &caps, op)?,
        whole(index.block_table.buffer(), &caps, op)?,
        whole(index.slots.buffer(), &caps, op)?,
        whole(index.positions.buffer(), &caps, op)?,
        be.inner.status.buf.as_entire_binding(),
    ];
    be.launch(&k, p, &args, be.grid(t * row)?)
}

pub(super) fn kv_cache_attention(
    be: &WgpuBackend,
    (q, k, v): (&T, &T, &T),
    index: &KvIndex<'_, WgpuBackend>,
    params: &AttentionParams,
    y: &mut T,
) -> Result<(), BackendError> {
    let AttentionDims { t, heads: nh, kv_heads: nkv, dk, dv, cache } = checks::kv_cache_attention(q, k, v, index, y)?;
    for (x, op) in [(q, "kv_cache_attention (q)"), (k, "kv_cache_attention (k)"), (v, "kv_cache_attention (v)"), (&*y, "kv_cache_attention (y)")] {
        want(x, DType::F32, op)?;
    }
    if t * nh * dv == 0 {
        return Ok(());
    }
    let caps = *be.caps();
    let kern = be.kernel("attention", || shaders::build(shaders::ATTENTION, &caps, &[]))?;
    let window = params.sliding_window.unwrap_or(0) as usize;
    let p = Params::new().u(t * nh)?.u(nh)?.u(nkv)?.u(dk)?.u(dv)?.u(cache.seqs)?.u(cache.max_blocks)?.u(cache.block_size)?.u(cache.blocks)?.u(window)?.f(params.scale);
    let op = "kv_cache_attention";
    let args = [
        whole(q.buffer(), &caps, op)?,
        whole(k.buffer(), &caps, op)?,
        whole(v.buffer(), &caps, op)?,
        whole(index.block_table.buffer(), &caps, op)?,
        whole(index.slots.buffer(), &caps, op)?,
        whole(index.positions.buffer(), &caps, op)?,
        whole(y.buffer(), &caps, op)?,
        be.inner.status.buf.as_entire_binding(),
    ];
    be.launch(&kern, p, &args, be.grid(t * nh)?)
}
