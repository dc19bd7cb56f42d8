//! What the backends exchange while connecting, when ranks live in several processes.

use std::sync::Arc;

use finetp_core::backend::{CommError, GroupSpec, HostTransport, InProcessRendezvous, Rendezvous, SharedObject};

use super::transport::MpiTransport;

/// The rendezvous of an MPI job: a group whose members all run in this process meets in
/// shared memory (as with threads); any other group exchanges bytes over the transport, and
/// gets the transport itself for its collectives.
pub(crate) struct MpiRendezvous {
    transport: Arc<MpiTransport>,
    local: InProcessRendezvous,
}

impl MpiRendezvous {
    pub(super) fn new(transport: Arc<MpiTransport>) -> Self {
        Self { transport, local: InProcessRendezvous::new() }
    }

    fn all_local(&self, spec: &GroupSpec) -> bool {
        let me = self.transport.process_of(spec.global_rank());
        spec.global_ranks.iter().all(|&r| self.transport.process_of(r) == me)
    }

    /// Global rank `rank` (of this process) has ended: local waits for it fail at once.
    pub(crate) fn depart(&self, rank: usize) {
        self.local.depart(rank);
        self.transport.mail.depart(rank);
    }
}

impl Rendezvous for MpiRendezvous {
    fn all_gather_bytes(&self, spec: &GroupSpec, mine: &[u8]) -> Result<Vec<Vec<u8>>, CommError> {
        if self.all_local(spec) {
            return self.local.all_gather_bytes(spec, mine);
        }
        let t: &dyn HostTransport = &*self.transport;
        finetp_core::backend::all_gather_bytes(t, spec, "rendezvous", mine)
    }

    fn local_shared(&self, spec: &GroupSpec, kind: &'static str, make: &dyn Fn() -> SharedObject) -> Result<Option<SharedObject>, CommError> {
        if self.all_local(spec) { self.local.local_shared(spec, kind, make) } else { Ok(None) }
    }

    fn transport(&self) -> Option<Arc<dyn HostTransport>> {
        Some(self.transport.clone())
    }
}
