//! A member's communicator from its group's spec, through the run's rendezvous.

use std::sync::Arc;

use finetp_core::backend::{CommError, GroupSpec, Rendezvous, SharedObject};

use super::handle::InProcessComm;
use super::rendezvous::Shared;

/// What the rendezvous hands out for the CPU collectives: one per group.
const KIND: &str = "cpu.in_process";

/// This member's handle on the in-process group `spec`. Every member calls it (from its own
/// thread); the first to arrive makes the group's shared state and the rendezvous hands it to
/// the others, returning once all have come. A group of one needs nobody and returns at once.
///
/// # Errors
/// [`CommError::Timeout`] / [`CommError::PeerFailed`] when a member never arrives (from the
/// rendezvous); [`CommError::Mismatch`] when members disagree on the group;
/// [`CommError::InvalidArgument`] when some members live in other processes — these
/// collectives only join threads of one process.
pub fn connect_in_process(spec: &GroupSpec, rv: &dyn Rendezvous) -> Result<InProcessComm, CommError> {
    if spec.size() == 1 {
        return Ok(InProcessComm::new(Arc::new(Shared::new(spec.clone())), 0));
    }
    let make = || -> SharedObject { Arc::new(Shared::new(spec.clone())) };
    let Some(obj) = rv.local_shared(spec, KIND, &make)? else {
        return Err(CommError::InvalidArgument {
            group: spec.name(),
            op: "connect",
            detail: "members of this group run in other processes; the CPU backend's in-process collectives only join threads of one process".into(),
        });
    };
    let shared = obj.downcast::<Shared>().map_err(|_| CommError::Mismatch {
        group: spec.name(),
        op: "connect",
        detail: "the rendezvous handed out another kind of state for this group".into(),
    })?;
    if shared.global_ranks != spec.global_ranks {
        return Err(CommError::Mismatch {
            group: spec.name(),
            op: "connect",
            detail: format!("members {:?} and {:?} call themselves {}", shared.global_ranks, spec.global_ranks, spec.name()),
        });
    }
    Ok(InProcessComm::new(shared, spec.rank))
}
