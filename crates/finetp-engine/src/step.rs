//! One step run as issued, the path of eager mode and of graph mode's fallback.

use finetp_core::backend::{BackendError, DType, Device, HostData, Tensor};
use finetp_core::decoder::{CausalLm, KvCache, StepBatch, StepInputs};
use finetp_core::parallel::StepCounts;

use crate::EngineError;

/// The model's forward on `batch`, then [`sample`](finetp_core::backend::Kernels::sample) of
/// its logits: u32 `[M]` on the device. Graph mode captures exactly this.
pub(crate) fn forward_and_sample<B: Device>(be: &B, model: &dyn CausalLm<B>, batch: &StepBatch<B>, kv: &mut KvCache<B>) -> Result<Tensor<B>, finetp_core::decoder::ModelError> {
    let logits = model.forward(be, batch, kv)?;
    let mut ids = be.zeros(&[logits.rows()], DType::U32)?;
    be.sample(&logits, &batch.sample_params, &mut ids)?;
    Ok(ids)
}

/// The sampled ids, on the host.
pub(crate) fn read_ids<B: Device>(be: &B, ids: &Tensor<B>) -> Result<Vec<u32>, BackendError> {
    match be.download(ids)?.data {
        HostData::U32(v) => Ok(v),
        other => Err(BackendError::DType { op: "sample (ids)", expected: "u32", got: other.dtype() }),
    }
}

/// One step run as issued: upload `inputs`, forward, sample on the device, read back one token
/// per logit row. With `host`, the logits are brought to the host too: `host[i]` is
/// subtracted from logit row `i` (repetition penalties) before the device samples it, and the
/// raw logits (as the model gave them) are returned beside the sampled ids, for
/// log-probabilities.
#[allow(clippy::too_many_arguments)]
pub(crate) fn eager_step<B: Device>(
    rank: usize,
    be: &B,
    model: &dyn CausalLm<B>,
    kv: &mut KvCache<B>,
    inputs: &StepInputs,
    token_counts: StepCounts,
    logit_counts: StepCounts,
    host: Option<&[Vec<(u32, f32)>]>,
) -> Result<(Vec<u32>, Option<crate::logits::HostLogits>), EngineError> {
    let be_err = |source| EngineError::Backend { rank, source };
    let batch = StepBatch::upload(be, inputs, token_counts, logit_counts).map_err(be_err)?;
    let Some(adjust) = host else {
        let ids = forward_and_sample(be, model, &batch, kv).map_err(|source| EngineError::Model { rank, source })?;
        return Ok((read_ids(be, &ids).map_err(be_err)?, None));
    };
    let logits = model.forward(be, &batch, kv).map_err(|source| EngineError::Model { rank, source })?;
    let vocab = logits.shape().get(1).copied().unwrap_or(0);
    let host = be.download(&logits).map_err(be_err)?;
    let raw = host.to_f32_vec().ok_or_else(|| be_err(BackendError::DType { op: "logits", expected: "a float type", got: host.dtype() }))?;
    let mut to_sample = &logits;
    let adjusted;
    if adjust.iter().any(|a| !a.is_empty()) {
        let mut v = raw.clone();
        for (row, a) in adjust.iter().enumerate() {
            for &(token, by) in a {
                if let Some(x) = v.get_mut(row * vocab + token as usize) {
                    *x -= by;
                }
            }
        }
        let t = finetp_core::backend::HostTensor::f32(v, &[logits.rows(), vocab]).and_then(|t| t.into_dtype(logits.dtype())).map_err(be_err)?;
        adjusted = be.upload(&t).map_err(be_err)?;
        to_sample = &adjusted;
    }
    let mut ids = be.zeros(&[logits.rows()], DType::U32).map_err(be_err)?;
    be.sample(to_sample, &batch.sample_params, &mut ids).map_err(be_err)?;
    Ok((read_ids(be, &ids).map_err(be_err)?, Some(crate::logits::HostLogits { vocab, data: raw })))
}
