//! How the members of a group find each other when their communicator is made.
//!
//! Making a communicator is collective: NCCL's members must all hold the unique id rank 0
//! made, HCCL's the root info, the CPU backend's the same shared memory. A [`Rendezvous`] is
//! what carries that between the members of one group, before any communicator exists: a few
//! bytes from every member to every member, and — when every member lives in this process — one
//! shared object. The launcher makes one per run: [`InProcessRendezvous`](super::InProcessRendezvous)
//! for ranks that are threads; an MPI one (over the world communicator) for ranks that are
//! processes.
//!
//! Every call is itself a rendezvous of the whole group: it returns once every member has made
//! the same call, fails with [`CommError::Timeout`] after the spec's timeout naming the members
//! that did not come, and with [`CommError::PeerFailed`] as soon as a missing member's rank is
//! known to have ended.

use std::any::Any;
use std::sync::Arc;

use super::{CommError, GroupSpec, HostTransport};

/// An object shared by every member of an in-process group.
pub type SharedObject = Arc<dyn Any + Send + Sync>;

/// What the members of one group exchange while their communicator is made.
pub trait Rendezvous: Send + Sync {
    /// Each member contributes `mine`; every member receives all members' bytes, in member
    /// order. Calls on one group are matched in the order each member makes them.
    fn all_gather_bytes(&self, spec: &GroupSpec, mine: &[u8]) -> Result<Vec<Vec<u8>>, CommError>;

    /// One object for the whole group, made by the first member to arrive with `make` and handed
    /// to every member, when all members live in this process; `None` when some do not (then
    /// the group needs a communicator that crosses processes). `kind` separates objects of
    /// different purposes on the same group (e.g. `"cpu.in_process"`).
    fn local_shared(
        &self,
        spec: &GroupSpec,
        kind: &'static str,
        make: &dyn Fn() -> SharedObject,
    ) -> Result<Option<SharedObject>, CommError>;

    /// Point-to-point traffic to members in other processes, when this run has ranks in
    /// several (`None` for threads of one process). A backend whose collectives move host
    /// memory builds them on it for the groups [`local_shared`](Self::local_shared) answers
    /// `None` for.
    fn transport(&self) -> Option<Arc<dyn HostTransport>> {
        None
    }
}

/// Member `root`'s bytes on every member (an NCCL unique id, an HCCL root info). Non-roots pass
/// anything (usually nothing) as `mine`.
///
/// # Errors
/// As [`Rendezvous::all_gather_bytes`], and [`CommError::InvalidArgument`] for a root outside
/// the group.
pub fn broadcast_bytes(rv: &dyn Rendezvous, spec: &GroupSpec, root: usize, mine: &[u8]) -> Result<Vec<u8>, CommError> {
    if root >= spec.size() {
        return Err(CommError::InvalidArgument {
            group: spec.name(),
            op: "broadcast_bytes",
            detail: format!("root {root} is not a member of a group of {}", spec.size()),
        });
    }
    let send: &[u8] = if spec.rank == root { mine } else { &[] };
    let mut all = rv.all_gather_bytes(spec, send)?;
    Ok(std::mem::take(&mut all[root]))
}
