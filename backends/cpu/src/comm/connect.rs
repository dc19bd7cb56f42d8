//! A member's communicator from its group's spec, through the run's rendezvous: shared
//! memory when every member is a thread of this process, the launcher's transport when some
//! live in other processes.

use std::sync::Arc;

use finetp_core::backend::{Collective, CommError, GroupSpec, Rendezvous, SharedObject};

use super::handle::InProcessComm;
use super::remote::RemoteComm;
use super::rendezvous::Shared;
use crate::CpuBackend;

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
    in_process(spec, rv)?.ok_or_else(|| CommError::InvalidArgument {
        group: spec.name(),
        op: "connect",
        detail: "members of this group run in other processes; the CPU backend's in-process collectives only join threads of one process".into(),
    })
}

/// This member's host-memory communicator on `spec`, wherever its members live: the
/// in-process collectives when they are all threads of this process, otherwise the
/// collectives over the run's [`HostTransport`](finetp_core::backend::HostTransport) (MPI),
/// which give the same bits. What the CPU backend's `connect` answers, and what staged
/// backends (wgpu) stage through.
///
/// # Errors
/// As [`connect_in_process`] when the run has no transport; otherwise the transport's
/// errors while the members check that they agree on the group.
pub fn connect_host(spec: &GroupSpec, rv: &dyn Rendezvous) -> Result<Arc<dyn Collective<CpuBackend>>, CommError> {
    if let Some(comm) = in_process(spec, rv)? {
        return Ok(Arc::new(comm));
    }
    match rv.transport() {
        Some(tx) => Ok(Arc::new(RemoteComm::connect(spec, tx)?)),
        None => Ok(Arc::new(connect_in_process(spec, rv)?)),
    }
}

/// The in-process handle, or `None` when some members live in other processes.
fn in_process(spec: &GroupSpec, rv: &dyn Rendezvous) -> Result<Option<InProcessComm>, CommError> {
    if spec.size() == 1 {
        return Ok(Some(InProcessComm::new(Arc::new(Shared::new(spec.clone())), 0)));
    }
    let make = || -> SharedObject { Arc::new(Shared::new(spec.clone())) };
    let Some(obj) = rv.local_shared(spec, KIND, &make)? else {
        return Ok(None);
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
    Ok(Some(InProcessComm::new(shared, spec.rank)))
}
