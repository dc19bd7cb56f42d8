//! Ranks as processes: one process per rank, or a few (`--ranks-per-process`), started by
//! `mpirun` on one host or several.
//!
//! [`MpiWorld`] is this process's place in the job. Its [`MpiTransport`](transport) carries
//! every collective of a group whose members live in several processes, as point-to-point
//! messages with a deadline (MPI itself has no timeouts), and [`MpiRendezvous`](rendezvous)
//! gives the backends what they exchange while connecting. Groups whose members are all
//! threads of this process keep the in-process collectives.
//!
//! Why ferrompi on Open MPI: its calls return `Result`s (a failed MPI call is a typed error,
//! not an abort: it installs `MPI_ERRORS_RETURN`), it builds through a small C shim with no
//! libclang, and its persistent requests own their buffers, so a receive that never completes
//! can be abandoned (leaked) when its deadline passes instead of blocking the process in a
//! scope that must wait for it.
//!
//! Ranks map to processes in blocks: process `p` runs global ranks `p·k .. (p+1)·k` for `k`
//! ranks per process, so a replica's ranks (which the plan numbers together) share a process
//! where they can.

mod liveness;
mod rendezvous;
mod transport;

use std::mem::ManuallyDrop;
use std::ops::Range;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ferrompi::{Communicator, Mpi, ThreadLevel};
use finetp_core::backend::{GroupRole, GroupSpec, HostTransport};

pub(crate) use rendezvous::MpiRendezvous;
use transport::MpiTransport;

use crate::EngineError;

/// This process's place in the MPI job. It stays on the thread that initialised MPI (hence
/// `Rc`): MPI is finalised there, when the last handle drops.
pub struct MpiWorld {
    /// Finalised on a clean drop; leaked after a failure (pending requests may never
    /// complete, and `MPI_Finalize` would wait for them).
    mpi: ManuallyDrop<Mpi>,
    transport: Arc<MpiTransport>,
    process: usize,
    processes: usize,
    ranks_per_process: usize,
}

impl MpiWorld {
    /// Initialises MPI (`MPI_THREAD_MULTIPLE`: every rank thread calls MPI) for a job whose
    /// processes each run `ranks_per_process` ranks.
    ///
    /// # Errors
    /// [`EngineError::Launch`] when MPI cannot start or grants less than
    /// `MPI_THREAD_MULTIPLE` with several ranks per process.
    pub fn init(ranks_per_process: usize) -> Result<Rc<Self>, EngineError> {
        let launch = |detail: String| EngineError::Launch { detail };
        let mpi = Mpi::init_thread(ThreadLevel::Multiple).map_err(|e| launch(format!("MPI_Init_thread failed: {e}")))?;
        let granted = mpi.thread_level();
        if granted < ThreadLevel::Multiple {
            return Err(launch(format!(
                "the MPI library granted {granted:?} but finetp's rank threads call MPI concurrently and need MPI_THREAD_MULTIPLE"
            )));
        }
        let world = mpi.world();
        let comm: Communicator = world.duplicate().map_err(|e| launch(format!("MPI_Comm_dup failed: {e}")))?;
        let (process, processes) = (comm.rank() as usize, comm.size() as usize);
        let peers = liveness::Peers::exchange(&comm).map_err(|e| launch(format!("cannot exchange the processes' hosts: {e}")))?;
        let transport = Arc::new(MpiTransport::new(comm, process, ranks_per_process, peers));
        liveness::watch_for_termination(transport.terminated.clone(), process);
        Ok(Rc::new(Self { mpi: ManuallyDrop::new(mpi), transport, process, processes, ranks_per_process }))
    }

    /// This process's index in the job (`MPI_COMM_WORLD` rank).
    pub fn process(&self) -> usize {
        self.process
    }

    pub fn processes(&self) -> usize {
        self.processes
    }

    pub fn ranks_per_process(&self) -> usize {
        self.ranks_per_process
    }

    /// The global ranks this process runs in a world of `world` ranks.
    ///
    /// # Errors
    /// [`EngineError::Config`] when the job's processes × ranks per process is not the
    /// world the parallel layout needs.
    pub fn local_ranks(&self, world: usize) -> Result<Range<usize>, EngineError> {
        let k = self.ranks_per_process;
        if self.processes.checked_mul(k) != Some(world) {
            return Err(EngineError::Config(format!(
                "the layout needs {world} ranks, but mpirun started {} processes x {k} ranks per process = {}",
                self.processes,
                self.processes * k
            )));
        }
        Ok(self.process * k..(self.process + 1) * k)
    }

    /// The rendezvous of one run (`Launcher::run`), which may follow earlier runs on the same
    /// transport (`finetp bench` runs many): their ranks' departures are forgotten.
    pub(crate) fn rendezvous(&self) -> MpiRendezvous {
        self.transport.mail.clear_departed();
        MpiRendezvous::new(self.transport.clone())
    }

    /// Every process's `mine`, in process order, on every process (the launcher gathers the
    /// ranks' results with it, so that process 0 reports the whole run).
    ///
    /// # Errors
    /// As the transport: a process that never calls it is a timeout naming its first rank.
    pub fn all_gather_bytes(&self, mine: &[u8], timeout: Duration) -> Result<Vec<Vec<u8>>, EngineError> {
        let k = self.ranks_per_process;
        let firsts: Vec<usize> = (0..self.processes).map(|p| p * k).collect();
        let spec = GroupSpec { role: GroupRole::Named("processes"), index: 0, global_ranks: firsts, rank: self.process, timeout };
        let t: &dyn HostTransport = &*self.transport;
        finetp_core::backend::all_gather_bytes(t, &spec, "gather_results", mine).map_err(|source| EngineError::Comm { rank: self.process * k, source })
    }

    /// Marks the job as failed here: MPI is not finalised on drop (a collective may have been
    /// abandoned with requests in flight).
    pub fn fail(&self) {
        self.transport.failed.store(true, Ordering::SeqCst);
    }

    /// The flag the transport raises when a collective fails.
    pub(crate) fn failed(&self) -> &AtomicBool {
        &self.transport.failed
    }
}

impl Drop for MpiWorld {
    fn drop(&mut self) {
        if !self.failed().load(Ordering::SeqCst) {
            // SAFETY: dropped once, here; nothing uses `mpi` afterwards.
            unsafe { ManuallyDrop::drop(&mut self.mpi) };
        }
    }
}
