//! Vocab-parallel embedding over the embedding group.

use std::sync::Arc;

use super::{LayerError, LayerGroups, load_vocab_shard};
use crate::backend::{Block, Collective, DType, Device, Tensor};
use crate::parallel::mappings::{gather_tokens, reduce_scatter_tokens};
use crate::shard::WeightSource;

/// Each member holds `Vp/P` consecutive rows of the padded vocabulary (`[Vp/P, H]`, the padded
/// tail zero; `Vp/(t·P)` under TP `t`, part `j·P + m`). Ids of the whole group are gathered,
/// looked up with out-of-shard ids masked to zero, and the partial rows are reduce-scattered
/// back: each member receives exactly its own tokens' hidden states (under TP, `Partial` over
/// TP: a TP all-reduce sums the replica's vocabulary parts).
///
/// Reduce-scatter rather than all-reduce + slice: both give the same rows, but reduce-scatter
/// delivers `(P−1)/P · T_me·H` elements per member instead of all-reduce's `2(P−1)/P · ΣT·H`.
pub struct VocabParallelEmbedding<B: Device> {
    table: Arc<Tensor<B>>,
    /// First padded-vocabulary id this shard owns.
    row_start: usize,
    hidden: usize,
    groups: LayerGroups<B>,
}

impl<B: Device> VocabParallelEmbedding<B> {
    /// Loads this rank's rows of `name` (`[vocab, hidden]` in the checkpoint).
    pub fn load(
        be: &B,
        src: &dyn WeightSource,
        name: &str,
        vocab: usize,
        hidden: usize,
        groups: LayerGroups<B>,
    ) -> Result<Self, LayerError> {
        let (table, per) = load_vocab_shard("VocabParallelEmbedding", be, src, name, (vocab, hidden), &groups)?;
        Ok(Self { table: Arc::new(table), row_start: groups.part() * per, hidden, groups })
    }

    /// `ids`: u32 `[T]` of this rank (`T = counts[me]`, may be 0; `Shard(tokens)`, the same on
    /// the replica's TP ranks) → `[T, H]` activations (`Shard(tokens)`, replicated over TP).
    pub fn forward(&self, be: &B, ids: &Tensor<B>, counts: &[usize]) -> Result<Tensor<B>, LayerError> {
        // The gather consumes its input; ids are T u32s, so copying them is cheaper than a clone API.
        let mut mine = be.zeros(&[ids.rows()], DType::U32)?;
        be.copy_block(ids, &mut mine, Block::rows(0, 0, ids.rows(), 1))?;
        let group = &*self.groups.fine;
        let all_ids = gather_tokens(be, group, mine, counts)?; // [ΣT]      Replicated
        let mut rows = be.zeros(&[all_ids.rows(), self.hidden], be.activation_dtype())?;
        be.embedding(&all_ids, &self.table, self.row_start, &mut rows)?; // [ΣT, H] Partial
        let mut out = reduce_scatter_tokens(be, group, rows, counts)?; // [T, H]   Shard(tokens), Partial over TP
        self.groups.reduce_tp(&mut out)?; //                                [T, H]   Replicated over TP
        Ok(out)
    }

    /// The shard, for an lm_head tied to this embedding with the same group size.
    pub fn shard(&self) -> Arc<Tensor<B>> {
        self.table.clone()
    }

    pub fn group(&self) -> &Arc<dyn Collective<B>> {
        &self.groups.fine
    }

    /// Resident bytes of this member's weights, measured from the live buffer.
    pub fn weight_bytes(&self) -> usize {
        self.table.size_in_bytes()
    }
}
