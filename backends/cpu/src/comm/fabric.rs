//! Every group of a [`Plan`], ready for the rank threads to connect to.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use finetp_core::backend::{Collective, CommError};
use finetp_core::config::Component;
use finetp_core::parallel::GroupSet;
use finetp_core::plan::Plan;

use super::InProcessComm;
use super::rendezvous::Shared;
use crate::CpuBackend;

/// The in-process interconnect of one run: one rendezvous per group of every component and
/// per DP group.
///
/// Each (component, group) has its own state even when another component planned the same
/// member list (e.g. `o_proj` and `mlp` both of size 8): interleaved collectives on the two
/// can then never be matched against each other. `Send + Sync`: share it (e.g. in an `Arc` or
/// by reference from scoped threads) and let each rank thread [`connect`](Self::connect).
pub struct Fabric {
    plan: Plan,
    /// Per component (in `plan.components` order), per group.
    components: Vec<Vec<Arc<Shared>>>,
    dp: Vec<Arc<Shared>>,
    /// For each global rank: its DP group and position in it.
    dp_of: Vec<Option<(usize, usize)>>,
    connected: Mutex<Vec<bool>>,
}

fn shared(name: String, ranks: &[usize], timeout: Duration) -> Arc<Shared> {
    Arc::new(Shared::new(name, ranks.to_vec(), timeout))
}

impl Fabric {
    /// Builds every group of `plan`; every collective on them gives up after `timeout`
    /// waiting for a member.
    pub fn new(plan: &Plan, timeout: Duration) -> Fabric {
        let components = plan
            .components
            .iter()
            .map(|cp| {
                let name = cp.component.name();
                cp.groups.iter().enumerate().map(|(g, ranks)| shared(format!("{name}[{g}]"), ranks, timeout)).collect()
            })
            .collect();
        let dp =
            plan.dp_groups.iter().enumerate().map(|(g, ranks)| shared(format!("dp[{g}]"), ranks, timeout)).collect();
        let world = plan.world_size();
        let mut dp_of = vec![None; world];
        for (g, ranks) in plan.dp_groups.iter().enumerate() {
            for (pos, &r) in ranks.iter().enumerate() {
                if let Some(slot) = dp_of.get_mut(r) {
                    *slot = Some((g, pos));
                }
            }
        }
        Fabric { plan: plan.clone(), components, dp, dp_of, connected: Mutex::new(vec![false; world]) }
    }

    /// The plan this fabric was built from.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// This rank's communicators, one per component and its DP group. Each rank connects
    /// exactly once: a second call would create a second member handle for the same rank,
    /// so it is refused with [`CommError::InvalidArgument`], as is a rank outside the world.
    pub fn connect(&self, rank: usize) -> Result<GroupSet<CpuBackend>, CommError> {
        let bad = |detail: String| CommError::InvalidArgument { group: "fabric".into(), op: "connect", detail };
        let mut connected = self.connected.lock().unwrap_or_else(PoisonError::into_inner);
        let world = connected.len();
        match connected.get(rank) {
            None => return Err(bad(format!("rank {rank} is outside the world of {world} ranks"))),
            Some(true) => return Err(bad(format!("rank {rank} is already connected"))),
            Some(false) => {}
        }
        let member = |c: Component| -> Result<Arc<dyn Collective<CpuBackend>>, CommError> {
            let ci = self.plan.components.iter().position(|cp| cp.component == c);
            let m = self.plan.membership(c, rank);
            let (Some(ci), Some(m)) = (ci, m) else {
                return Err(bad(format!("rank {rank} has no {} group in the plan", c.name())));
            };
            let shared =
                self.components[ci].get(m.group).ok_or_else(|| bad(format!("no {} group {}", c.name(), m.group)))?;
            Ok(Arc::new(InProcessComm::new(shared.clone(), m.rank_in_group)))
        };
        let Some((g, pos)) = self.dp_of.get(rank).copied().flatten() else {
            return Err(bad(format!("rank {rank} is in no DP group of the plan")));
        };
        let set = GroupSet {
            embedding: member(Component::Embedding)?,
            lm_head: member(Component::LmHead)?,
            o_proj: member(Component::OProj)?,
            mlp: member(Component::Mlp)?,
            dp: Arc::new(InProcessComm::new(self.dp[g].clone(), pos)),
        };
        connected[rank] = true;
        Ok(set)
    }
}

impl Drop for Fabric {
    /// A rank that never connected now never can: its peers fail at once with `PeerFailed`
    /// instead of waiting for the timeout.
    fn drop(&mut self) {
        let connected = self.connected.get_mut().unwrap_or_else(PoisonError::into_inner);
        for rank in (0..connected.len()).filter(|&r| !connected[r]) {
            for (cp, groups) in self.plan.components.iter().zip(&self.components) {
                if let Some(m) = self.plan.membership(cp.component, rank)
                    && let Some(s) = groups.get(m.group)
                {
                    s.leave(m.rank_in_group);
                }
            }
            if let Some((g, pos)) = self.dp_of[rank] {
                self.dp[g].leave(pos);
            }
        }
    }
}

impl std::fmt::Debug for Fabric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fabric").field("world", &self.plan.world_size()).finish_non_exhaustive()
    }
}
