//! The groups one sharded layer spans, and which part of its weight a rank holds.

use std::sync::Arc;

use crate::backend::{Backend, Collective, CommError, Tensor};

/// A component of fine-grained size `P` inside replicas of TP size `t` is split in `t·P`
/// parts. Standard TP splits it first, as Megatron does; the component's fine-grained group
/// (the same TP position of `P` consecutive replicas, as the planner lays it out) splits each
/// TP part again. Rank (TP index `j`, group member `m`) holds part `j·P + m`, so one TP rank's
/// parts are contiguous: after the fine-grained collective a rank holds exactly what a TP-only
/// rank would (its TP part, `Partial` over TP or sharded by TP), and the TP collective that ends
/// the layer under standard TP finishes it.
///
/// TP 1 is the fine-grained group alone; fine-grained size 1 is Megatron TP. (vLLM-Ascend
/// instead stops standard TP from sharding a layer that has a fine-grained size, so the TP ranks
/// of one replica hold the same part and repeat its work, research §2.2; composing the two
/// divides the weights by `t·P` with the same collectives plus the usual TP one.)
pub struct LayerGroups<B: Backend> {
    /// The component's fine-grained group (size `P`, 1 when the component is replicated).
    pub fine: Arc<dyn Collective<B>>,
    /// The replica's TP group; `None` for TP 1.
    pub tp: Option<Arc<dyn Collective<B>>>,
}

impl<B: Backend> LayerGroups<B> {
    /// A TP group of one member is stored as `None`, so TP 1 costs no collective.
    pub fn new(fine: Arc<dyn Collective<B>>, tp: Arc<dyn Collective<B>>) -> Self {
        let tp = (tp.info().size() > 1).then_some(tp);
        Self { fine, tp }
    }

    /// A layer with no standard TP (TP 1): its fine-grained group alone.
    pub fn fine_only(fine: Arc<dyn Collective<B>>) -> Self {
        Self { fine, tp: None }
    }

    pub fn tp_size(&self) -> usize {
        self.tp.as_ref().map_or(1, |g| g.info().size())
    }

    pub fn tp_rank(&self) -> usize {
        self.tp.as_ref().map_or(0, |g| g.info().rank)
    }

    /// The fine-grained group's size `P`.
    pub fn fine_size(&self) -> usize {
        self.fine.info().size()
    }

    /// Which of the [`parts`](Self::parts) this rank holds: `j·P + m`.
    pub fn part(&self) -> usize {
        self.tp_rank() * self.fine_size() + self.fine.info().rank
    }

    /// How many parts the weight is split in: `t·P`.
    pub fn parts(&self) -> usize {
        self.tp_size() * self.fine_size()
    }

    /// `Partial` over TP → `Replicated`: the all-reduce that ends a row-parallel layer under
    /// standard TP. Nothing for TP 1.
    pub fn reduce_tp(&self, t: &mut Tensor<B>) -> Result<(), CommError> {
        match &self.tp {
            Some(g) => g.all_reduce_sum(t),
            None => Ok(()),
        }
    }
}

impl<B: Backend> Clone for LayerGroups<B> {
    fn clone(&self) -> Self {
        Self { fine: self.fine.clone(), tp: self.tp.clone() }
    }
}
