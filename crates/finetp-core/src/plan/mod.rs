//! The group planner: which global ranks form each component's groups.
//!
//! Rank layout is vLLM's: DP outermost, then PP, then TP fastest,
//! `rank = dp·(PP·TP) + pp·TP + tp`. A component of size `P` groups the same (pp, tp) position of
//! `P` consecutive DP replicas: DP=16, TP=1, P=8 → `[0..7] [8..15]`; DP=4, TP=2, P=2 →
//! `[0,2] [1,3] [4,6] [5,7]`.
//!
//! vLLM-Ascend reshapes the world as PP×DP×TP instead, which pairs pipeline stages of one
//! replica as if they were DP ranks when PP > 1 (research §2.3). We do not copy that: a group
//! here never mixes pipeline stages or TP positions.
//!
//! Pure and deterministic: no backend, no I/O.

use std::fmt;
use std::time::Duration;

use crate::backend::{GroupRole, GroupSpec};
use crate::config::{Component, ParallelConfig};

/// Where a global rank sits in the DP × PP × TP grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RankCoord {
    pub dp: usize,
    pub pp: usize,
    pub tp: usize,
}

/// One rank's membership in a component's groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Membership {
    /// Index into [`ComponentPlan::groups`].
    pub group: usize,
    /// Position inside that group (0-based, the order of its rank list).
    pub rank_in_group: usize,
}

/// The groups of one component.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ComponentPlan {
    pub component: Component,
    pub size: usize,
    /// Each group's global ranks, in rank-in-group order. The groups partition the world.
    pub groups: Vec<Vec<usize>>,
}

/// All groups of a parallel layout.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Plan {
    pub parallel: ParallelConfig,
    /// One entry per component, in [`Component::ALL`] order.
    pub components: Vec<ComponentPlan>,
    /// The data-parallel groups (same pp, tp; all DP replicas): the world in which a
    /// component's groups are carved, and where per-step metadata is exchanged.
    pub dp_groups: Vec<Vec<usize>>,
    /// The tensor-parallel groups (one replica, one pipeline stage: `TP` consecutive ranks),
    /// over which every sharded layer's standard-TP part is reduced.
    pub tp_groups: Vec<Vec<usize>>,
}

impl Plan {
    /// Plans every component. The config was validated when it was built, so this cannot fail.
    pub fn new(parallel: &ParallelConfig) -> Self {
        let components = Component::ALL
            .into_iter()
            .map(|c| {
                let size = parallel.size(c);
                ComponentPlan { component: c, size, groups: groups_along_dp(parallel, size) }
            })
            .collect();
        let dp_groups = groups_along_dp(parallel, parallel.data_parallel_size);
        let tp = parallel.tensor_parallel_size;
        let tp_groups = (0..parallel.world_size() / tp).map(|g| (g * tp..(g + 1) * tp).collect()).collect();
        Self { parallel: parallel.clone(), components, dp_groups, tp_groups }
    }

    pub fn world_size(&self) -> usize {
        self.parallel.world_size()
    }

    /// The grid position of a global rank.
    pub fn coord(&self, rank: usize) -> RankCoord {
        let p = &self.parallel;
        let tp = rank % p.tensor_parallel_size;
        let pp = (rank / p.tensor_parallel_size) % p.pipeline_parallel_size;
        let dp = rank / (p.tensor_parallel_size * p.pipeline_parallel_size);
        RankCoord { dp, pp, tp }
    }

    pub fn component(&self, c: Component) -> &ComponentPlan {
        &self.components[Component::ALL.iter().position(|x| *x == c).expect("all components planned")]
    }

    /// Which group of `c` the global `rank` is in, and where. `None` if `rank >= world`.
    pub fn membership(&self, c: Component, rank: usize) -> Option<Membership> {
        if rank >= self.world_size() {
            return None;
        }
        let p = &self.parallel;
        let size = p.size(c);
        let RankCoord { dp, pp, tp } = self.coord(rank);
        let per_chunk = p.pipeline_parallel_size * p.tensor_parallel_size;
        let group = (dp / size) * per_chunk + pp * p.tensor_parallel_size + tp;
        Some(Membership { group, rank_in_group: dp % size })
    }

    /// The global ranks of the group of `c` that contains `rank`.
    pub fn group_of(&self, c: Component, rank: usize) -> Option<&[usize]> {
        let m = self.membership(c, rank)?;
        Some(&self.component(c).groups[m.group])
    }

    /// Which DP group `rank` is in (one per (pp, tp) position), and where: its DP index.
    pub fn dp_membership(&self, rank: usize) -> Option<Membership> {
        if rank >= self.world_size() {
            return None;
        }
        let RankCoord { dp, pp, tp } = self.coord(rank);
        Some(Membership { group: pp * self.parallel.tensor_parallel_size + tp, rank_in_group: dp })
    }

    /// Which TP group `rank` is in (one per (dp, pp) position), and where: its TP index.
    pub fn tp_membership(&self, rank: usize) -> Option<Membership> {
        if rank >= self.world_size() {
            return None;
        }
        let tp = self.parallel.tensor_parallel_size;
        Some(Membership { group: rank / tp, rank_in_group: rank % tp })
    }

    /// Every group `rank` belongs to, as data for the backend to make communicators from, in
    /// the one order every rank connects them ([`GroupRole::PLANNED`]: the four components,
    /// the DP group, then the TP group). Creating a communicator is collective on NCCL and HCCL, so a fixed
    /// global order is what keeps two ranks from waiting on each other. `None` if `rank` is
    /// outside the world.
    pub fn group_specs(&self, rank: usize, timeout: Duration) -> Option<Vec<GroupSpec>> {
        GroupRole::PLANNED
            .into_iter()
            .map(|role| {
                let (m, ranks) = match role {
                    GroupRole::Component(c) => {
                        let m = self.membership(c, rank)?;
                        (m, &self.component(c).groups[m.group])
                    }
                    GroupRole::Dp | GroupRole::Named(_) => {
                        let m = self.dp_membership(rank)?;
                        (m, &self.dp_groups[m.group])
                    }
                    GroupRole::Tp => {
                        let m = self.tp_membership(rank)?;
                        (m, &self.tp_groups[m.group])
                    }
                };
                Some(GroupSpec { role, index: m.group, global_ranks: ranks.clone(), rank: m.rank_in_group, timeout })
            })
            .collect()
    }
}

/// Groups of `size` consecutive DP replicas at each (pp, tp) position, ordered by DP chunk,
/// then pp, then tp (i.e. by their first rank).
fn groups_along_dp(p: &ParallelConfig, size: usize) -> Vec<Vec<usize>> {
    let stride = p.pipeline_parallel_size * p.tensor_parallel_size;
    let mut groups = Vec::with_capacity(p.world_size() / size);
    for chunk in 0..p.data_parallel_size / size {
        for pp in 0..p.pipeline_parallel_size {
            for tp in 0..p.tensor_parallel_size {
                let base = pp * p.tensor_parallel_size + tp;
                groups.push((0..size).map(|i| (chunk * size + i) * stride + base).collect());
            }
        }
    }
    groups
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.parallel;
        writeln!(
            f,
            "world {} = DP {} x PP {} x TP {} (rank = dp*{} + pp*{} + tp)",
            self.world_size(),
            p.data_parallel_size,
            p.pipeline_parallel_size,
            p.tensor_parallel_size,
            p.pipeline_parallel_size * p.tensor_parallel_size,
            p.tensor_parallel_size
        )?;
        let tp = p.tensor_parallel_size;
        for cp in &self.components {
            let how = match (cp.size, tp) {
                (1, 1) => " (replicated)".to_string(),
                (1, _) => format!(" (standard TP {tp} only)"),
                (_, 1) => String::new(),
                (s, _) => format!(" (x TP {tp} = {} parts)", s * tp),
            };
            writeln!(f, "{:<10} size {:<3}{how}: {}", cp.component.name(), cp.size, format_groups(&cp.groups))?;
        }
        if tp > 1 {
            writeln!(f, "{:<10} size {tp:<3}: {}", "tp", format_groups(&self.tp_groups))?;
        }
        Ok(())
    }
}

/// Groups written compactly, `[0..7]` for a contiguous run, eliding the middle of long lists.
fn format_groups(groups: &[Vec<usize>]) -> String {
    const SHOWN: usize = 8;
    let one = |g: &Vec<usize>| {
        let contiguous = g.windows(2).all(|w| w[1] == w[0] + 1);
        match (contiguous, g.len()) {
            (_, 1) => format!("[{}]", g[0]),
            (true, _) => format!("[{}..{}]", g[0], g[g.len() - 1]),
            (false, _) => format!("[{}]", g.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")),
        }
    };
    if groups.len() <= SHOWN {
        return groups.iter().map(one).collect::<Vec<_>>().join(" ");
    }
    let head: Vec<String> = groups[..SHOWN / 2].iter().map(one).collect();
    let tail: Vec<String> = groups[groups.len() - SHOWN / 2..].iter().map(one).collect();
    format!("{} ... ({} more) {}", head.join(" "), groups.len() - SHOWN, tail.join(" "))
}

#[cfg(test)]
mod tests;
