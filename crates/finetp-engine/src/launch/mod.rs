//! One way to start ranks: every run, benchmark, example and test goes through [`Launcher::run`].
//!
//! The launcher is the only code that knows whether ranks are threads or processes. Each rank
//! opens its device ([`Backend::open`]), makes its communicators from the plan's groups
//! ([`Plan::group_specs`] → [`GroupSet::connect`], through the run's [`Rendezvous`]), and then runs
//! the caller's body. Ranks are threads of this process that meet in an
//! [`InProcessRendezvous`] ([`Launcher::threads`]), or — with the `mpi` feature, under
//! `mpirun` — processes, each running a block of the world's ranks as threads
//! ([`Launcher::mpi`], `mpi` module); the body and everything below it cannot tell which.
//!
//! A rank that fails ends its thread: its communicators are dropped and the rendezvous is told,
//! so its peers fail at once with a peer failure (never a hang) and the run reports the failing
//! rank's own error, not its peers' echoes.
//!
//! [`Rendezvous`]: finetp_core::backend::Rendezvous

#[cfg(feature = "mpi")]
pub mod mpi;

use std::ops::Range;
#[cfg(feature = "mpi")]
use std::rc::Rc;
use std::time::Duration;

use finetp_core::backend::{Backend, DeviceSlot, InProcessRendezvous, Rendezvous};
use finetp_core::parallel::GroupSet;
use finetp_core::plan::Plan;

use crate::EngineError;

/// Environment variables an MPI launcher sets in every process it starts (Open MPI, then
/// PMI/PMIx as MPICH, Slurm and others set them): the job's process count.
const MPI_SIZE_VARS: [&str; 3] = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"];

/// The number of processes of the MPI job this process belongs to, when an MPI launcher
/// (`mpirun`) started it; `None` otherwise. Read from the environment, so a binary built
/// without MPI can still tell that it was started by one (and say how to build one with it).
pub fn mpi_launched_processes() -> Option<usize> {
    MPI_SIZE_VARS.iter().find_map(|v| std::env::var(v).ok()).and_then(|s| s.trim().parse().ok())
}

/// How long a process of an MPI job stays up after printing its error: see
/// [`let_the_launcher_forward_output`].
const LINGER: Duration = Duration::from_millis(300);

/// In a process that an MPI launcher started, waits [`LINGER`] before the process exits with
/// an error it has just printed; elsewhere returns at once.
///
/// `mpirun` tears the job down when the first process exits with an error, and output that
/// the other processes wrote just before it did may then not be forwarded (seen with Open
/// MPI 4.1 in the stopped-rank fault test). Every process that fails prints and lingers, so
/// the launcher has read every error written in that window before the first exit ends the
/// job.
pub fn let_the_launcher_forward_output() {
    if mpi_launched_processes().is_some_and(|n| n > 1) {
        std::thread::sleep(LINGER);
    }
}

/// Default collective timeout for engine runs.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// One rank, ready to work: its global rank, its device and its communicators.
pub struct Rank<B: Backend> {
    pub rank: usize,
    pub be: B,
    pub groups: GroupSet<B>,
}

/// How the ranks of a run are started.
#[derive(Clone)]
pub struct Launcher {
    timeout: Duration,
    procs: Procs,
}

/// Where the ranks live.
#[derive(Clone)]
enum Procs {
    /// Every rank a thread of this process.
    Threads,
    /// A block of ranks per process of an MPI job.
    #[cfg(feature = "mpi")]
    Mpi(Rc<mpi::MpiWorld>),
}

impl std::fmt::Debug for Launcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let procs = match &self.procs {
            Procs::Threads => "threads".to_string(),
            #[cfg(feature = "mpi")]
            Procs::Mpi(w) => format!("mpi process {} of {}", w.process(), w.processes()),
        };
        f.debug_struct("Launcher").field("timeout", &self.timeout).field("ranks", &procs).finish()
    }
}

impl Default for Launcher {
    fn default() -> Self {
        Self::threads(DEFAULT_TIMEOUT)
    }
}

/// The run's rendezvous, which the launcher also tells when a rank ends.
trait LaunchRendezvous: Rendezvous {
    fn depart(&self, rank: usize);
}

impl LaunchRendezvous for InProcessRendezvous {
    fn depart(&self, rank: usize) {
        InProcessRendezvous::depart(self, rank);
    }
}

#[cfg(feature = "mpi")]
impl LaunchRendezvous for mpi::MpiRendezvous {
    fn depart(&self, rank: usize) {
        mpi::MpiRendezvous::depart(self, rank);
    }
}

/// Tells the rendezvous that a rank has ended, however its thread ends (a panic included).
struct Departs<'a>(&'a dyn LaunchRendezvous, usize);

impl Drop for Departs<'_> {
    fn drop(&mut self) {
        self.0.depart(self.1);
    }
}

impl Launcher {
    /// Every rank a thread of this process; every collective (and every communicator's
    /// creation) gives up after `timeout` waiting for a member.
    pub fn threads(timeout: Duration) -> Self {
        Self { timeout, procs: Procs::Threads }
    }

    /// This process's block of ranks of an MPI job (`world`), as threads; the other blocks
    /// run in the job's other processes, and groups that span processes communicate over
    /// MPI. Collectives and communicator creation give up after `timeout`.
    #[cfg(feature = "mpi")]
    pub fn mpi(world: Rc<mpi::MpiWorld>, timeout: Duration) -> Self {
        Self { timeout, procs: Procs::Mpi(world) }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether this process reports the run (the only process with threads; process 0 of an
    /// MPI job).
    pub fn is_root(&self) -> bool {
        match &self.procs {
            Procs::Threads => true,
            #[cfg(feature = "mpi")]
            Procs::Mpi(w) => w.process() == 0,
        }
    }

    /// Whether this process runs every rank of any world (threads), so that a plan may have any
    /// world size; in an MPI job the world is the job's.
    pub fn runs_any_world(&self) -> bool {
        match &self.procs {
            Procs::Threads => true,
            #[cfg(feature = "mpi")]
            Procs::Mpi(_) => false,
        }
    }

    /// The global ranks this process runs in a world of `world` ranks.
    ///
    /// # Errors
    /// [`EngineError::Config`] when an MPI job's processes cannot hold `world` ranks.
    pub fn local_ranks(&self, world: usize) -> Result<Range<usize>, EngineError> {
        match &self.procs {
            Procs::Threads => Ok(0..world),
            #[cfg(feature = "mpi")]
            Procs::Mpi(w) => w.local_ranks(world),
        }
    }

    /// As [`run`](Self::run), but every process gets every rank's result, in rank order:
    /// an MPI job's processes exchange their ranks' results (as JSON) when their ranks are
    /// done. With threads, the same as `run`.
    ///
    /// # Errors
    /// As [`run`](Self::run); and [`EngineError::Launch`] when the results cannot be
    /// exchanged or read back.
    pub fn run_gathered<B, T, F>(&self, plan: &Plan, body: F) -> Result<Vec<T>, EngineError>
    where
        B: Backend,
        T: Send + serde::Serialize + serde::de::DeserializeOwned,
        F: Fn(Rank<B>) -> Result<T, EngineError> + Sync,
    {
        match &self.procs {
            Procs::Threads => self.run(plan, body),
            #[cfg(feature = "mpi")]
            Procs::Mpi(w) => {
                let mine = self.run(plan, body).inspect_err(|_| w.fail())?;
                let launch = |detail: String| EngineError::Launch { detail };
                let bytes = serde_json::to_vec(&mine).map_err(|e| launch(format!("cannot encode this process's results: {e}")))?;
                let all = w.all_gather_bytes(&bytes, self.timeout).inspect_err(|_| w.fail())?;
                let mut out = Vec::with_capacity(plan.world_size());
                for (p, b) in all.iter().enumerate() {
                    let theirs: Vec<T> = serde_json::from_slice(b).map_err(|e| launch(format!("cannot read process {p}'s results: {e}")))?;
                    out.extend(theirs);
                }
                Ok(out)
            }
        }
    }

    /// Runs `body` on every rank of `plan`'s world that this process runs (all of them with
    /// threads; its block in an MPI job), each on device `B` with its groups connected;
    /// returns those ranks' results in rank order.
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
        let local = self.local_ranks(world)?;
        match &self.procs {
            Procs::Threads => self.run_ranks(plan, local, &InProcessRendezvous::new(), &body),
            #[cfg(feature = "mpi")]
            Procs::Mpi(w) => self.run_ranks(plan, local, &w.rendezvous(), &body).inspect_err(|_| w.fail()),
        }
    }

    /// The ranks `local` of `plan` as threads of this process, meeting through `rv`.
    fn run_ranks<B, T, F>(&self, plan: &Plan, local: Range<usize>, rv: &dyn LaunchRendezvous, body: &F) -> Result<Vec<T>, EngineError>
    where
        B: Backend,
        T: Send,
        F: Fn(Rank<B>) -> Result<T, EngineError> + Sync,
    {
        let timeout = self.timeout;
        let (first, count) = (local.start, local.len());
        let results: Vec<Result<T, EngineError>> = std::thread::scope(|s| {
            let handles: Vec<_> = local
                .map(|rank| {
                    let spawned = std::thread::Builder::new().name(format!("finetp-rank-{rank}")).spawn_scoped(s, move || {
                        let _departs = Departs(rv, rank);
                        let slot = DeviceSlot { rank, local_rank: rank - first, local_ranks: count };
                        let be = B::open(&slot).map_err(|source| EngineError::Open { rank, source })?;
                        let specs = plan.group_specs(rank, timeout).expect("every rank below the world size has its groups");
                        let groups = GroupSet::connect(&be, &specs, rv).map_err(|source| EngineError::Connect { rank, source })?.with_expert_parallel(plan);
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
                .map(|(i, h)| match h {
                    Ok(h) => h.join().unwrap_or_else(|p| Err(EngineError::Panicked { rank: first + i, message: panic_message(&*p) })),
                    Err(e) => Err(e),
                })
                .collect()
        });
        let mut ok = Vec::with_capacity(count);
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
