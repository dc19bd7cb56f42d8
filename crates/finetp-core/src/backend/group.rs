//! A group as data: which ranks, my place among them, how long to wait. The plan derives one
//! [`GroupSpec`] per group a rank belongs to ([`Plan::group_specs`](crate::plan::Plan::group_specs));
//! each backend turns it into its own communicator
//! ([`Backend::connect`](super::Backend::connect)).

use std::fmt;
use std::time::Duration;

use crate::config::Component;

/// What a group is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupRole {
    /// The group sharding one fine-grained component.
    Component(Component),
    /// All DP replicas at one (pp, tp) position: per-step metadata.
    Dp,
    /// The TP ranks of one replica at one pipeline stage (Megatron's tensor-parallel group):
    /// every sharded layer's TP reduction, and the attention heads' split.
    Tp,
    /// A group built outside a plan (tests, benchmarks), named for messages.
    Named(&'static str),
}

impl GroupRole {
    /// The roles of a plan's groups, in the order every rank connects them (communicator creation
    /// is collective on NCCL and HCCL: one global order means no two ranks wait on each other
    /// in opposite orders).
    pub const PLANNED: [GroupRole; 6] = [
        GroupRole::Component(Component::Embedding),
        GroupRole::Component(Component::LmHead),
        GroupRole::Component(Component::OProj),
        GroupRole::Component(Component::Mlp),
        GroupRole::Dp,
        GroupRole::Tp,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            GroupRole::Component(c) => c.name(),
            GroupRole::Dp => "dp",
            GroupRole::Tp => "tp",
            GroupRole::Named(n) => n,
        }
    }
}

/// One group a rank belongs to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GroupSpec {
    pub role: GroupRole,
    /// Which of the role's groups (the plan's group order): `(role, index)` names the group
    /// uniquely in its world, the same on every member.
    pub index: usize,
    /// Global ranks of the members, in rank-in-group order.
    pub global_ranks: Vec<usize>,
    /// This rank's position in `global_ranks`.
    pub rank: usize,
    /// How long any one collective (or the communicator's creation) waits for the other
    /// members before failing.
    pub timeout: Duration,
}

impl GroupSpec {
    /// Member `rank` of a group built outside a plan: `(role, 0)` names it.
    pub fn named(name: &'static str, global_ranks: Vec<usize>, rank: usize, timeout: Duration) -> Self {
        Self { role: GroupRole::Named(name), index: 0, global_ranks, rank, timeout }
    }

    /// The whole group of `global_ranks`, one spec per member (the `i`-th is member `i`'s).
    pub fn members(name: &'static str, global_ranks: &[usize], timeout: Duration) -> Vec<Self> {
        (0..global_ranks.len()).map(|r| Self::named(name, global_ranks.to_vec(), r, timeout)).collect()
    }

    pub fn size(&self) -> usize {
        self.global_ranks.len()
    }

    /// This member's global rank.
    pub fn global_rank(&self) -> usize {
        self.global_ranks.get(self.rank).copied().unwrap_or(usize::MAX)
    }

    /// The global rank of member `member`, for messages (`usize::MAX` if out of range).
    pub fn global_rank_of(&self, member: usize) -> usize {
        self.global_ranks.get(member).copied().unwrap_or(usize::MAX)
    }

    /// `"mlp[1]"`: role and index, as in messages.
    pub fn name(&self) -> String {
        self.to_string()
    }

    /// The world-unique identity of the group (the same on every member).
    pub fn key(&self) -> GroupKey {
        GroupKey { role: self.role, index: self.index }
    }
}

impl fmt::Display for GroupSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.role.name(), self.index)
    }
}

/// Names one group of a world: what a rendezvous matches members by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupKey {
    pub role: GroupRole,
    pub index: usize,
}
