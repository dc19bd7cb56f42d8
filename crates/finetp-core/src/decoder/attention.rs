//! Causal self-attention of a rank's batch over its KV cache, sequence by sequence.

use super::{KvCache, ModelError, StepBatch};
use crate::backend::{DType, Device, Tensor};

/// Writes each sequence's new keys/values into its cache slot and attends over the cache.
///
/// `q [rows, nh, dk]`, `k [rows, n_kv, dk]`, `v [rows, n_kv, dv]` for all batch rows; returns
/// `[rows, nh·dv]` with padded rows (belonging to no sequence) left zero. Attention is
/// data-parallel: each rank attends over its own sequences only.
pub fn cached_attention<B: Device>(
    be: &B,
    batch: &StepBatch<B>,
    kv: &mut KvCache<B>,
    layer: usize,
    (q, k, v): (&Tensor<B>, &Tensor<B>, &Tensor<B>),
    scale: f32,
) -> Result<Tensor<B>, ModelError> {
    let (rows, nh, dk) = dims3(q)?;
    let dv = v.shape()[2];
    let max_len = kv.max_len();
    let mut out = be.zeros(&[rows, nh * dv], DType::F32)?;
    for s in &batch.seqs {
        if s.past + s.len > max_len {
            return Err(ModelError::Batch(format!(
                "sequence in slot {} needs {} cache rows, the cache holds {max_len}",
                s.slot,
                s.past + s.len
            )));
        }
        let (kc, vc) = kv
            .layer_slot(layer, s.slot)
            .ok_or_else(|| ModelError::Batch(format!("no KV-cache slot {} for layer {layer}", s.slot)))?;
        be.copy_block(k, s.start, 0, kc, s.past, 0, s.len, k.row_len())?;
        be.copy_block(v, s.start, 0, vc, s.past, 0, s.len, v.row_len())?;
        let mut qs = be.zeros(&[s.len, nh, dk], DType::F32)?;
        be.copy_block(q, s.start, 0, &mut qs, 0, 0, s.len, nh * dk)?;
        let mut ys = be.zeros(&[s.len, nh, dv], DType::F32)?;
        be.attention(&qs, kc, vc, s.past, scale, &mut ys)?;
        be.copy_block(&ys, 0, 0, &mut out, s.start, 0, s.len, nh * dv)?;
    }
    Ok(out)
}

fn dims3<B: Device>(t: &Tensor<B>) -> Result<(usize, usize, usize), ModelError> {
    match t.shape() {
        [a, b, c] => Ok((*a, *b, *c)),
        s => Err(ModelError::Batch(format!("expected a [rows, heads, dim] tensor, got {s:?}"))),
    }
}
