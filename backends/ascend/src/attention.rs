//! Paged-cache attention from aclnn's parts, and the cache places of a step's rows.
//!
//! The step's index tensors (slots, positions, block table: a few integers a row) are read on
//! the host; from them each sequence's cache blocks are gathered device to device, and per
//! query head `softmax(q·Kᵀ·scale + mask)·V` runs as two `aclnnMatmul`s (over strided views:
//! no transposes are materialised), an `aclnnInplaceAdd` of the causal / sliding-window mask
//! and an `aclnnSoftmax`. A fused kernel (`aclnnFusedInferAttentionScore`, paged) is the
//! obvious next step once someone can measure on a 910B; this form uses only operators whose
//! documented semantics leave nothing to guess.

use std::collections::BTreeMap;

use finetp_core::backend::checks::CacheDims;
use finetp_core::backend::{AttentionParams, Backend, BackendError, Block, DType, HostTensor, KvIndex, PAD_SLOT, Tensor, checks};

use crate::AscendBackend;
use crate::aclnn::aclnn;
use crate::host::u32s;

/// A step's index tensors read back once: slots, positions, block table.
pub(crate) struct HostIndex {
    pub slots: Vec<u32>,
    pub pos: Vec<u32>,
    pub table: Vec<u32>,
}

impl HostIndex {
    pub(crate) fn read(be: &AscendBackend, index: &KvIndex<'_, AscendBackend>) -> Result<Self, BackendError> {
        Ok(Self { slots: u32s(be, index.slots)?, pos: u32s(be, index.positions)?, table: u32s(be, index.block_table)? })
    }
}

/// Each row's `(block, row in block)` in the cache, `None` for padding; a slot, position or
/// block outside the table or pool is an error.
pub(crate) fn places(ix: &HostIndex, d: &CacheDims, t: usize) -> Result<Vec<Option<(usize, usize)>>, BackendError> {
    let (slots, pos, table) = (&ix.slots, &ix.pos, &ix.table);
    (0..t)
        .map(|r| {
            if slots[r] == PAD_SLOT {
                return Ok(None);
            }
            let (s, p) = (slots[r] as usize, pos[r] as usize);
            let b = p / d.block_size;
            if s >= d.seqs || b >= d.max_blocks {
                return Err(BackendError::Shape(format!("kv cache: row {r} (slot {s}, position {p}) is outside a block table of {} slots x {} blocks", d.seqs, d.max_blocks)));
            }
            let block = table[s * d.max_blocks + b] as usize;
            if block >= d.blocks {
                return Err(BackendError::Shape(format!("kv cache: row {r} maps to block {block} of a pool of {}", d.blocks)));
            }
            Ok(Some((block, p % d.block_size)))
        })
        .collect()
}

/// Zeroes a tensor (enqueued).
fn clear(be: &AscendBackend, t: &mut Tensor<AscendBackend>) -> Result<(), BackendError> {
    let z = be.zeros(t.shape(), t.dtype())?;
    be.copy_block(&z, t, Block::whole(&z))
}

pub(crate) fn attention(
    be: &AscendBackend,
    q: &Tensor<AscendBackend>,
    k: &Tensor<AscendBackend>,
    v: &Tensor<AscendBackend>,
    index: &KvIndex<'_, AscendBackend>,
    params: &AttentionParams,
    y: &mut Tensor<AscendBackend>,
) -> Result<(), BackendError> {
    let d = checks::kv_cache_attention(q, k, v, index, y)?;
    for (t, op) in [(q, "attention q"), (k, "attention k"), (v, "attention v"), (&*y, "attention y")] {
        if t.dtype() != DType::F32 {
            return Err(BackendError::DType { op, expected: "f32", got: t.dtype() });
        }
    }
    if d.t == 0 {
        return Ok(());
    }
    be.no_host_during_capture("kv_cache_attention (reads the step's index on the host)")?;
    clear(be, y)?;
    let ix = HostIndex::read(be, index)?;
    let places = places(&ix, &d.cache, d.t)?;
    let (slots, pos, table) = (&ix.slots, &ix.pos, &ix.table);
    let mut seqs: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (r, p) in places.iter().enumerate() {
        if p.is_some() {
            seqs.entry(slots[r]).or_default().push(r);
        }
    }
    let (nh, nkv, dk, dv, bs) = (d.heads, d.kv_heads, d.dk, d.dv, d.cache.block_size);
    let group = nh / nkv;
    let scale = be.upload(&HostTensor::f32(vec![params.scale], &[1])?)?;
    for (slot, rows) in seqs {
        let ts = rows.len();
        let len = rows.iter().map(|&r| pos[r] as usize + 1).max().unwrap_or(0);
        let nb = len.div_ceil(bs);
        let keys = nb * bs;
        // This sequence's blocks, in position order.
        let (mut kg, mut vg) = (be.empty(&[nb, bs, nkv, dk], DType::F32)?, be.empty(&[nb, bs, nkv, dv], DType::F32)?);
        for b in 0..nb {
            let block = table[slot as usize * d.cache.max_blocks + b] as usize;
            if block >= d.cache.blocks {
                return Err(BackendError::Shape(format!("kv cache: slot {slot} block {b} maps to block {block} of a pool of {}", d.cache.blocks)));
            }
            be.copy_block(k, &mut kg, Block::rows(block, b, 1, bs * nkv * dk))?;
            be.copy_block(v, &mut vg, Block::rows(block, b, 1, bs * nkv * dv))?;
        }
        // Its query rows, scaled.
        let mut qs = be.empty(&[ts, nh, dk], DType::F32)?;
        for (i, &r) in rows.iter().enumerate() {
            be.copy_block(q, &mut qs, Block::rows(r, i, 1, nh * dk))?;
        }
        let (qd, sd) = (be.desc(&qs)?, be.desc(&scale)?);
        aclnn!(be, aclnnInplaceMulGetWorkspaceSize, aclnnInplaceMul, (qd.ptr, sd.ptr))?;
        // Causal (and windowed) mask: key j is seen by the row at position p iff j <= p and
        // j > p - window.
        let mask: Vec<f32> = rows
            .iter()
            .flat_map(|&r| {
                let p = pos[r] as usize;
                let lo = params.sliding_window.map_or(0, |w| (p + 1).saturating_sub(w as usize));
                (0..keys).map(move |j| if j <= p && j >= lo { 0.0 } else { f32::NEG_INFINITY })
            })
            .collect();
        let mask = be.upload(&HostTensor::f32(mask, &[ts, keys])?)?;
        let (scores, probs, out_h) = (be.empty(&[ts, keys], DType::F32)?, be.empty(&[ts, keys], DType::F32)?, be.empty(&[ts, dv], DType::F32)?);
        let mut out = be.empty(&[ts, nh * dv], DType::F32)?;
        let (sdesc, pdesc, odesc, mdesc) = (be.desc(&scores)?, be.desc(&probs)?, be.desc(&out_h)?, be.desc(&mask)?);
        for h in 0..nh {
            let kvh = h / group;
            let qh = be.view(&qs, &[ts, dk], &[nh * dk, 1], h * dk)?;
            let kt = be.view(&kg, &[dk, keys], &[1, nkv * dk], kvh * dk)?;
            aclnn!(be, aclnnMatmulGetWorkspaceSize, aclnnMatmul, (qh.ptr, kt.ptr, sdesc.ptr, 0i8))?;
            be.add_into(&sdesc, &mdesc)?;
            aclnn!(be, aclnnSoftmaxGetWorkspaceSize, aclnnSoftmax, (sdesc.ptr, -1i64, pdesc.ptr))?;
            let vh = be.view(&vg, &[keys, dv], &[nkv * dv, 1], kvh * dv)?;
            aclnn!(be, aclnnMatmulGetWorkspaceSize, aclnnMatmul, (pdesc.ptr, vh.ptr, odesc.ptr, 0i8))?;
            be.copy_block(&out_h, &mut out, Block::at((0, 0), (0, h * dv), ts, dv))?;
        }
        for (i, &r) in rows.iter().enumerate() {
            be.copy_block(&out, y, Block::rows(i, r, 1, nh * dv))?;
        }
    }
    Ok(())
}
