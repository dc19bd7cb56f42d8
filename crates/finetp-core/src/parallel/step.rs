//! Per-step token counts of every DP rank, from which each group's `counts` are read.

use crate::backend::GroupSpec;

/// How many tokens each DP replica runs this step. The engine fills it from one small
/// collective on the DP group per step (vLLM exchanges the same metadata); every layer then
/// reads its own group's counts without further communication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepCounts {
    /// Tokens per DP replica, indexed by DP rank.
    pub per_dp_rank: Vec<usize>,
    /// Ranks per replica (PP × TP): global rank / this = DP rank.
    pub ranks_per_replica: usize,
}

impl StepCounts {
    pub fn new(per_dp_rank: Vec<usize>, ranks_per_replica: usize) -> Self {
        Self { per_dp_rank, ranks_per_replica: ranks_per_replica.max(1) }
    }

    /// Every replica padded to the same static capacity (graph mode).
    pub fn uniform(dp: usize, capacity: usize, ranks_per_replica: usize) -> Self {
        Self::new(vec![capacity; dp], ranks_per_replica)
    }

    /// The counts of the members of `group`, in rank-in-group order.
    pub fn for_group(&self, group: &GroupSpec) -> Vec<usize> {
        group.global_ranks.iter().map(|r| self.per_dp_rank[r / self.ranks_per_replica]).collect()
    }
}
