//! Parallel lm_head over the lm_head group.

use std::sync::Arc;

use super::{LayerError, LayerGroups, check_divides, linear, load_vocab_shard};
use crate::backend::{Block, Device, Tensor};
use crate::config::pad_vocab;
use crate::parallel::mappings::{exchange, gather_tokens};
use crate::shard::WeightSource;

/// Each member holds `Vp/P` vocabulary rows of the output projection. The group's hidden
/// states are gathered, every member computes the logits of all group tokens for its vocabulary
/// shard, and an all-to-all returns to each member the full-vocabulary logits of **its own**
/// tokens (vLLM-Ascend's scheme, research §4.2), padding columns removed. Sampling then stays
/// local to each DP rank. Under TP `t` a rank holds part `j·P + m` of `t·P`; after the
/// all-to-all it holds its TP part's columns, and an all-gather over TP gives every TP rank of
/// the replica the same full-vocabulary logits.
pub struct ParallelLmHead<B: Device> {
    weight: Arc<Tensor<B>>,
    vocab: usize,
    per_rank: usize,
    groups: LayerGroups<B>,
}

impl<B: Device> ParallelLmHead<B> {
    /// Loads this member's rows of `name` (`[vocab, hidden]` in the checkpoint; for tied
    /// embeddings with a different group size, the embedding's tensor name).
    pub fn load(
        be: &B,
        src: &dyn WeightSource,
        name: &str,
        vocab: usize,
        hidden: usize,
        groups: LayerGroups<B>,
    ) -> Result<Self, LayerError> {
        let (weight, per_rank) = load_vocab_shard("ParallelLmHead", be, src, name, (vocab, hidden), &groups)?;
        Ok(Self { weight: Arc::new(weight), vocab, per_rank, groups })
    }

    /// Shares an embedding's shard (tied embeddings, same group size, hence the same layout).
    pub fn tied(shard: Arc<Tensor<B>>, vocab: usize, groups: LayerGroups<B>) -> Result<Self, LayerError> {
        let per_rank = check_divides("ParallelLmHead", "padded vocabulary", pad_vocab(vocab), groups.parts())?;
        if shard.rows() != per_rank {
            return Err(LayerError::Shape {
                layer: "ParallelLmHead",
                detail: format!("tied shard has {} rows, this group needs {per_rank}", shard.rows()),
            });
        }
        Ok(Self { weight: shard, vocab, per_rank, groups })
    }

    /// `h`: `[T, H]` (this rank's rows that need logits, `Shard(tokens)`, the same on the
    /// replica's TP ranks; T may be 0) → `[T, vocab]` full-vocabulary logits of those rows,
    /// activations (replicated over TP).
    pub fn forward(&self, be: &B, h: Tensor<B>, counts: &[usize]) -> Result<Tensor<B>, LayerError> {
        let t = h.rows();
        let group = &*self.groups.fine;
        let size = group.info().size();
        let hg = gather_tokens(be, group, h, counts)?; //                  [ΣT, H]       Replicated
        let local = linear(be, &hg, &self.weight, None)?; //               [ΣT, Vp/tP]   block q = member q's rows
        let mine = vec![t; size];
        let recv = exchange(be, group, local, counts, &mine)?; //          [P·T, Vp/tP]  block s = part jP+s
        let recv = match &self.groups.tp {
            None => recv,
            Some(tp) => {
                let tps = tp.info().size();
                let mut all = be.zeros(&[tps * size * t, self.per_rank], recv.dtype())?;
                tp.all_gather(&recv, &vec![size * t; tps], &mut all)?; // [tP·T, Vp/tP] block s = part s
                all
            }
        };
        let mut logits = be.zeros(&[t, self.vocab], recv.dtype())?; //     [T, V]        padding dropped
        for s in 0..self.groups.parts() {
            let first = s * self.per_rank;
            let cols = self.per_rank.min(self.vocab.saturating_sub(first));
            if cols > 0 {
                be.copy_block(&recv, &mut logits, Block::at((s * t, 0), (0, first), t, cols))?;
            }
        }
        Ok(logits)
    }

    pub fn weight_bytes(&self) -> usize {
        self.weight.size_in_bytes()
    }

    /// True when this head shares its buffer with another layer (tied embeddings).
    pub fn is_shared(&self) -> bool {
        Arc::strong_count(&self.weight) > 1
    }
}
