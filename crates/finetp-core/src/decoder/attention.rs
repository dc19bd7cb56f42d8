//! Causal self-attention of a rank's batch over its KV cache, and the logit-row gather.

use super::{KvCache, ModelError, StepBatch};
use crate::backend::{AttentionParams, Device, Tensor};

/// Writes the batch's new keys/values into the cache and attends every row over its own
/// sequence (two device calls per tensor, no host loop, so the step can be captured).
///
/// `q [rows, nh, dk]`, `k [rows, n_kv, dk]`, `v [rows, n_kv, dv]` for all batch rows; returns
/// `[rows, nh·dv]` with padding rows zero. Attention is data-parallel: each rank attends over
/// its own sequences only.
pub fn cached_attention<B: Device>(
    be: &B,
    batch: &StepBatch<B>,
    kv: &mut KvCache<B>,
    layer: usize,
    (q, k, v): (&Tensor<B>, &Tensor<B>, &Tensor<B>),
    params: &AttentionParams,
) -> Result<Tensor<B>, ModelError> {
    let [rows, nh, _] = *q.shape() else {
        return Err(ModelError::Batch(format!("expected a [rows, heads, dim] query, got {:?}", q.shape())));
    };
    let dv = v.shape().get(2).copied().unwrap_or(0);
    let (kc, vc) = kv.layer_mut(layer).ok_or_else(|| ModelError::Batch(format!("the KV cache has no layer {layer}")))?;
    let index = batch.kv_index();
    be.kv_cache_write(k, kc, &index)?;
    be.kv_cache_write(v, vc, &index)?;
    let mut y = be.zeros(&[rows, nh, dv], be.activation_dtype())?;
    be.kv_cache_attention(q, kc, vc, &index, params, &mut y)?;
    Ok(y.reshape(&[rows, nh * dv])?)
}

/// The rows of `x [rows, H]` whose logits are wanted (`batch.logit_rows`), as `[M, H]`.
pub fn logit_rows<B: Device>(be: &B, batch: &StepBatch<B>, x: &Tensor<B>) -> Result<Tensor<B>, ModelError> {
    let mut sel = be.zeros(&[batch.logit_rows_len(), x.row_len()], be.activation_dtype())?;
    be.embedding(&batch.logit_rows, x, 0, &mut sel)?;
    Ok(sel)
}
