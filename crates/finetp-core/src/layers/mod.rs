//! The four sharded components, written once, generic over the backend.
//!
//! Each layer owns its weight shard and its groups' communicators ([`LayerGroups`]: the
//! component's fine-grained group and, under standard TP, the replica's TP group; the weight is
//! split in TP × size parts); its `forward` takes this rank's tokens (`Shard(tokens)`) and the
//! fine-grained group's per-member `counts`, and returns this rank's tokens.  Under TP the
//! replica's TP ranks hold the same tokens. Uneven counts and idle members (0 tokens) are handled by the variable-size
//! collectives; an idle member still calls every collective, so a group never deadlocks.
//!
//! | component | data flow (P = group size, ΣT = group's tokens) |
//! |---|---|
//! | embedding | all-gather ids → masked lookup in `[Vp/P, H]` → reduce-scatter rows |
//! | lm_head   | all-gather hidden → `[ΣT, Vp/P]` logits → all-to-all → `[T, V]` full-vocab logits |
//! | o_proj    | all-to-all (tokens ↔ head slices) → `[ΣT, H]` partial → reduce-scatter rows |
//! | MLP       | all-gather hidden → gate_up, SiLU·mul, down → `[ΣT, H]` partial → reduce-scatter rows |
//!
//! Under TP `t` each row ends with the TP collective of standard TP: all-reduce (embedding,
//! o_proj, MLP; their outputs are `Partial` over TP) or all-gather of vocabulary columns
//! (lm_head).

mod groups;
mod o_proj;
mod parallel_lm_head;
mod parallel_mlp;
mod vocab_parallel_embedding;

pub use groups::LayerGroups;
pub use o_proj::RowParallelOProj;
pub use parallel_lm_head::ParallelLmHead;
pub use parallel_mlp::ParallelMlp;
pub use vocab_parallel_embedding::VocabParallelEmbedding;

use crate::backend::{BackendError, CommError, Device, Tensor};
use crate::shard::LoadError;

/// What a layer's `load` or `forward` can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayerError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Comm(#[from] CommError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("{layer}: {detail}")]
    Shape { layer: &'static str, detail: String },
}

/// `x [m, k] · w [n, k]ᵀ (+ bias)` into a new activation tensor `[m, n]`.
pub fn linear<B: Device>(be: &B, x: &Tensor<B>, w: &Tensor<B>, bias: Option<&Tensor<B>>) -> Result<Tensor<B>, BackendError> {
    let mut y = be.zeros(&[x.rows(), w.rows()], be.activation_dtype())?;
    be.linear(x, w, bias, &mut y)?;
    Ok(y)
}

/// Loads this rank's rows of a `[vocab, hidden]` table in the vocab-parallel layout shared by
/// the embedding and the lm_head (part [`LayerGroups::part`] of [`LayerGroups::parts`]);
/// returns the shard `[Vp/parts, H]` and `Vp/parts`.
fn load_vocab_shard<B: Device>(
    layer: &'static str,
    be: &B,
    src: &dyn crate::shard::WeightSource,
    name: &str,
    (vocab, hidden): (usize, usize),
    groups: &LayerGroups<B>,
) -> Result<(Tensor<B>, usize), LayerError> {
    src.expect_shape(name, &[vocab, hidden])?;
    let (part, parts) = (groups.part(), groups.parts());
    let padded = crate::config::pad_vocab(vocab);
    let per_rank = check_divides(layer, "padded vocabulary", padded, parts)?;
    let table = upload_weight(be, src, name, &crate::shard::ShardSpec::vocab(vocab, padded, part, parts))?;
    Ok((table, per_rank))
}

/// This rank's slice of a GEMM weight (or an embedding table) on the device, in the block format
/// it is stored in where the backend keeps that format and the slice keeps whole blocks
/// ([`WeightSource::load_stored`](crate::shard::WeightSource::load_stored)); otherwise decoded
/// to the backend's [`decoded_weight_dtype`](crate::backend::Backend::decoded_weight_dtype)
/// (f32 unless it says otherwise), or in its stored float dtype.
pub fn upload_weight<B: Device>(be: &B, src: &dyn crate::shard::WeightSource, name: &str, spec: &crate::shard::ShardSpec) -> Result<Tensor<B>, LayerError> {
    Ok(be.upload(&host_weight(be, src, name, spec)?)?)
}

/// [`upload_weight`]'s host tensor, for layers that stack several before uploading.
pub fn host_weight<B: Device>(
    be: &B,
    src: &dyn crate::shard::WeightSource,
    name: &str,
    spec: &crate::shard::ShardSpec,
) -> Result<crate::backend::HostTensor, LayerError> {
    let host = src.load_stored(name, spec)?;
    if host.dtype().is_quantized() && !be.keeps_weight_dtype(host.dtype()) {
        return Ok(host.into_dtype(be.decoded_weight_dtype())?);
    }
    Ok(host)
}

/// Errors unless `total` splits evenly into `size` parts (config validation should have
/// caught it; this keeps a layer built by hand from mis-sharding silently).
fn check_divides(layer: &'static str, what: &str, total: usize, size: usize) -> Result<usize, LayerError> {
    if size == 0 || !total.is_multiple_of(size) {
        return Err(LayerError::Shape { layer, detail: format!("{what} {total} is not divisible in {size} parts (TP x group size)") });
    }
    Ok(total / size)
}
