//! One way to start ranks: every run, benchmark, example and test goes through [`Launcher::run`].
//!
//! The launcher is the only code that knows whether ranks are threads or processes. Each rank
//! opens its device ([`Backend::open`]), makes its communicators from the plan's groups
//! ([`Plan::group_specs`] → [`GroupSet::connect`], through the run's [`Rendezvous`]), and then runs
//! the caller's body. Today ranks are threads of this process and meet in an
//! [`InProcessRendezvous`]; ranks that are processes (MPI) come behind the same call.
//!
//! A rank that fails ends its thread: its communicators are dropped and the rendezvous is told,
//! so its peers fail at once with a peer failure (never a hang) and the run reports the failing
//! rank's own error, not its peers' echoes.
//!
//! [`Rendezvous`]: finetp_core::backend::Rendezvous

use std::time::Duration;

use finetp_core::backend::{Backend, DeviceSlot, InProcessRendezvous};
use finetp_core::parallel::GroupSet;
use finetp_core::plan::Plan;

use crate::EngineError;

/// Default collective timeout for engine runs.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// One rank, ready to work: its global rank, its device and its communicators.
pub struct Rank<B: Backend> {
    pub rank: usize,
    pub be: B,
    pub groups: GroupSet<B>,
}

/// How the ranks of a run are started.
#[derive(Debug, Clone)]
pub struct Launcher {
    timeout: Duration,
}

impl Default for Launcher {
    fn default() -> Self {
        Self::threads(DEFAULT_TIMEOUT)
    }
}

/// Tells the rendezvous that a rank has ended, however its thread ends (a panic included).
struct Departs<'a>(&'a InProcessRendezvous, usize);

impl Drop for Departs<'_> {
    fn drop(&mut self) {
        self.0.depart(self.1);
    }
}

impl Launcher {
    /// Every rank a thread of this process; every collective (and every communicator's
    /// creation) gives up after `timeout` waiting for a member.
    pub fn threads(timeout: Duration) -> Self {
        Self { timeout }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs `body` on every rank of `plan`'s world, each on device `B` with its groups
    /// connected; returns the ranks' results in rank order.
    ///
    /// # Errors
    /// The failing rank's own error: [`EngineError::Open`] (no device),
    /// [`EngineError::Connect`], or whatever `body` returned; a panicking rank is
    /// [`EngineError::Panicked`]. Peers of a failed rank fail fast, and their views of its
    /// failure (a departed peer, a timeout, a mismatch) are reported only when nothing likelier
    /// to be the cause is ([`EngineError::root_cause_rank`]).
    pub fn run<B, T, F>(&self, plan: &Plan, body: F) -> Result<Vec<T>, EngineError>
    where
        B: Backend,
        T: Send,
        F: Fn(Rank<B>) -> Result<T, EngineError> + Sync,
    {
        let world = plan.world_size();
        let rv = InProcessRendezvous::new();
        let timeout = self.timeout;
        let results: Vec<Result<T, EngineError>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..world)
                .map(|rank| {
                    let (rv, body) = (&rv, &body);
                    let spawned = std::thread::Builder::new().name(format!("finetp-rank-{rank}")).spawn_scoped(s, move || {
                        let _departs = Departs(rv, rank);
                        let slot = DeviceSlot { rank, local_rank: rank, local_ranks: world };
                        let be = B::open(&slot).map_err(|source| EngineError::Open { rank, source })?;
                        let specs = plan.group_specs(rank, timeout).expect("every rank below the world size has its groups");
                        let groups = GroupSet::connect(&be, &specs, rv).map_err(|source| EngineError::Connect { rank, source })?;
                        body(Rank { rank, be, groups })
                    });
                    spawned.map_err(|source| {
                        rv.depart(rank);
                        EngineError::Spawn { rank, source }
                    })
                })
                .collect();
            handles
                .into_iter()
                .enumerate()
                .map(|(rank, h)| match h {
                    Ok(h) => h.join().unwrap_or_else(|p| Err(EngineError::Panicked { rank, message: panic_message(&*p) })),
                    Err(e) => Err(e),
                })
                .collect()
        });
        let mut ok = Vec::with_capacity(world);
        let mut errors = Vec::new();
        for r in results {
            match r {
                Ok(t) => ok.push(t),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            return Ok(ok);
        }
        // The likeliest root cause; the lowest rank among equals.
        let best = errors.iter().map(EngineError::root_cause_rank).max().unwrap_or(0);
        let root = errors.iter().position(|e| e.root_cause_rank() == best).unwrap_or(0);
        Err(errors.swap_remove(root))
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_default()
}
