//! Host-memory collectives. Ranks that are threads of one process meet in shared memory (the
//! in-process collectives, most of this module); a group whose members live in several
//! processes (`mpirun`) runs the same collectives, with the same bits, over the launcher's
//! transport ([`RemoteComm`]). [`connect_host`] (the CPU backend's
//! [`Backend::connect`](finetp_core::backend::Backend::connect)) picks between them.
//!
//! [`connect_in_process`] gives each member of a group the same shared state, handed out by the run's
//! [`Rendezvous`](finetp_core::backend::Rendezvous): one state per planned group (every
//! component group and every DP group, each its own, so that two groups with the same members
//! can never see each other's traffic). [`group_handles`] builds a single group's handles on
//! one thread, without a rendezvous (tests, benchmarks). [`StagedComm`] serves any other
//! backend with these collectives, staging its tensors through the host.
//!
//! # Protocol
//! A collective is a *round* of a generation-counted barrier (one `Mutex` + `Condvar` per
//! group, no spinning):
//! 1. **arrive**: each member posts its op, its argument summary and a pointer to its buffer,
//!    then sleeps until all members have arrived. The last one to arrive checks that everyone
//!    called the same op with consistent arguments; a disagreement is a [`CommError::Mismatch`]
//!    on every member (and [`CommError::InvalidArgument`] on the one with bad arguments), and
//!    the group stays usable. This is the only wait that gives up: after the group's timeout
//!    it fails with [`CommError::Timeout`] naming the members that never arrived, and a
//!    dropped peer handle fails it at once with [`CommError::PeerFailed`]. Either leaves the
//!    group *broken*: the lock-step invariant is lost, so every later call fails the same way
//!    (like an aborted NCCL communicator; connect the groups again).
//! 2. **move**: each member reads its peers' buffers directly, through the posted pointers,
//!    into its own output: no staging copy.
//! 3. **leave**: a second barrier, so that no member returns (and frees or overwrites its
//!    buffer) while a peer may still be reading it. Peers in step 2 only copy memory, so this
//!    wait is bounded and has no timeout; a member that panics in step 2 still takes part in
//!    it before unwinding, and its peers get [`CommError::PeerFailed`].
//!
//! # Bytes moved
//! With `S` bytes per row, `T = sum(counts)` rows and `N` members (each figure is one member's
//! reads + writes; every byte is copied once, straight from the source member's tensor):
//! - `all_gather`: reads `T·S`, writes `T·S` (exactly a memcpy of its output).
//! - `reduce_scatter_sum`: member `i` reads `N·counts[i]·S`, writes `counts[i]·S`; the
//!   summing is split across members.
//! - `all_reduce_sum` of `B` bytes: reduce-scatter then all-gather in place: reads about
//!   `2·B`, writes `B`, with one more barrier between the two halves.
//! - `all_to_all`: reads and writes `sum(recv_counts)·S`.
//! - `broadcast` of `B` bytes: each non-root reads and writes `B`; the root moves nothing.
//! - `barrier`: nothing; one rendezvous instead of two.
//!
//! A group of one member never locks: its collectives are local copies (or no-ops).

/// `impl Collective<CpuBackend> for $handle` whose every collective runs `$member`'s method of
/// the same name through `launch`: now, and recorded while a graph is captured (with a clone
/// of the member, to run again at each replay). The in-process and the cross-process handles
/// both use it.
macro_rules! collective_through_launch {
    ($handle:ty, $member:ident) => {
        impl finetp_core::backend::Collective<crate::CpuBackend> for $handle {
            fn info(&self) -> &finetp_core::backend::GroupSpec {
                &self.$member.info
            }

            fn all_reduce_sum(&self, t: &mut crate::CpuTensor) -> Result<(), finetp_core::backend::CommError> {
                crate::graph::launch::launch(&self.$member, op::ALL_REDUCE, &[], &mut [t], |m, _, o| m.all_reduce_sum(o[0]))
            }

            fn all_gather(&self, mine: &crate::CpuTensor, counts: &[usize], out: &mut crate::CpuTensor) -> Result<(), finetp_core::backend::CommError> {
                let counts = counts.to_vec();
                crate::graph::launch::launch(&self.$member, op::ALL_GATHER, &[mine], &mut [out], move |m, i, o| m.all_gather(i[0], &counts, o[0]))
            }

            fn reduce_scatter_sum(&self, all: &crate::CpuTensor, counts: &[usize], out: &mut crate::CpuTensor) -> Result<(), finetp_core::backend::CommError> {
                let counts = counts.to_vec();
                crate::graph::launch::launch(&self.$member, op::REDUCE_SCATTER, &[all], &mut [out], move |m, i, o| m.reduce_scatter_sum(i[0], &counts, o[0]))
            }

            fn all_to_all(
                &self,
                send: &crate::CpuTensor,
                send_counts: &[usize],
                recv_counts: &[usize],
                out: &mut crate::CpuTensor,
            ) -> Result<(), finetp_core::backend::CommError> {
                let (sc, rc) = (send_counts.to_vec(), recv_counts.to_vec());
                crate::graph::launch::launch(&self.$member, op::ALL_TO_ALL, &[send], &mut [out], move |m, i, o| m.all_to_all(i[0], &sc, &rc, o[0]))
            }

            fn broadcast(&self, t: &mut crate::CpuTensor, root: usize) -> Result<(), finetp_core::backend::CommError> {
                crate::graph::launch::launch(&self.$member, op::BROADCAST, &[], &mut [t], move |m, _, o| m.broadcast(o[0], root))
            }

            fn barrier(&self) -> Result<(), finetp_core::backend::CommError> {
                crate::graph::launch::launch(&self.$member, op::BARRIER, &[], &mut [], |m, _, _| m.barrier())
            }
        }
    };
}

mod check;
mod connect;
mod handle;
mod post;
mod remote;
mod rendezvous;
mod staged;
#[cfg(test)]
mod tests;
mod xfer;

use std::sync::Arc;
use std::time::Duration;

pub use connect::{connect_host, connect_in_process};
use finetp_core::backend::GroupSpec;
pub use handle::InProcessComm;
pub use remote::RemoteComm;
pub use staged::{StagedComm, connect_staged};

#[cfg(doc)]
use finetp_core::backend::CommError;

/// One handle per member of a single group (index = rank-in-group), sharing fresh state.
///
/// For tests and benchmarks that build a group outside a plan on one thread; the handles are
/// `Send + Sync`, so each can move to its member's thread. Dropping a handle tells the other
/// members that this one has left (their collectives fail with `PeerFailed`).
pub fn group_handles(name: &'static str, global_ranks: &[usize], timeout: Duration) -> Vec<InProcessComm> {
    let shared = Arc::new(rendezvous::Shared::new(GroupSpec::named(name, global_ranks.to_vec(), 0, timeout)));
    (0..global_ranks.len()).map(|i| InProcessComm::new(shared.clone(), i)).collect()
}
