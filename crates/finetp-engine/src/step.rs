//! One step run as issued, the path of eager mode and of graph mode's fallback.

use finetp_core::backend::{BackendError, DType, Device, HostData, Tensor};
use finetp_core::decoder::{CausalLm, KvCache, StepBatch, StepInputs};
use finetp_core::parallel::StepCounts;

use crate::EngineError;

/// One step run as issued: upload `inputs`, forward, sample on the device, read back one token
/// per logit row.
pub(crate) fn eager_step<B: Device>(
    rank: usize,
    be: &B,
    model: &dyn CausalLm<B>,
    kv: &mut KvCache<B>,
    inputs: &StepInputs,
    token_counts: StepCounts,
    logit_counts: StepCounts,
) -> Result<Vec<u32>, EngineError> {
    let be_err = |source| EngineError::Backend { rank, source };
    let batch = StepBatch::upload(be, inputs, token_counts, logit_counts).map_err(be_err)?;
    let ids = forward_and_sample(be, model, &batch, kv).map_err(|source| EngineError::Model { rank, source })?;
    read_ids(be, &ids).map_err(be_err)
}

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
