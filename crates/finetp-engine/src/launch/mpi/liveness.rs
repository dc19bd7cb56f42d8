//! Knowing when a peer process is gone, and when the launcher is ending the job.
//!
//! MPI does not tell a waiting receive that its sender died (over shared memory nothing
//! breaks; `mpirun` tears the job down about a second later). So each process learns every
//! process's host and pid at start, and a wait looks at the processes it is missing: one on
//! the same host whose `/proc/<pid>` is gone or a zombie has died, and the wait fails at once
//! naming its rank. Processes on other hosts are covered by MPI's own errors (a TCP peer that
//! vanishes), by the collective timeout, and by the launcher's SIGTERM, which makes every wait
//! give up with the ranks it was missing before the process exits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ferrompi::Communicator;

/// Bytes of one process's record: pid (4) and host name (up to 60).
const RECORD: usize = 64;

/// Every process's host and pid, and which of them this process can look at.
pub(super) struct Peers {
    pids: Vec<u32>,
    /// `true` for processes on this host whose `/proc` entry was visible at start.
    watchable: Vec<bool>,
}

impl Peers {
    /// One all-gather over `comm` at start (every process calls it).
    pub(super) fn exchange(comm: &Communicator) -> Result<Self, ferrompi::Error> {
        let host = comm.processor_name()?;
        let mut mine = [0u8; RECORD];
        mine[..4].copy_from_slice(&std::process::id().to_le_bytes());
        let name = host.as_bytes();
        let n = name.len().min(RECORD - 4);
        mine[4..4 + n].copy_from_slice(&name[..n]);
        let mut all = vec![0u8; RECORD * comm.size() as usize];
        comm.allgather(&mine, &mut all)?;
        let (mut pids, mut watchable) = (Vec::new(), Vec::new());
        for rec in all.chunks_exact(RECORD) {
            let pid = u32::from_le_bytes([rec[0], rec[1], rec[2], rec[3]]);
            let same_host = rec[4..] == mine[4..];
            pids.push(pid);
            watchable.push(same_host && std::path::Path::new(&format!("/proc/{pid}")).exists());
        }
        Ok(Self { pids, watchable })
    }

    /// How many processes the job has.
    pub(super) fn len(&self) -> usize {
        self.pids.len()
    }

    /// Whether process `p` is known to have died (only processes on this host can be known).
    pub(super) fn is_dead(&self, p: usize) -> bool {
        if !self.watchable.get(p).copied().unwrap_or(false) {
            return false;
        }
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pids[p])) {
            Err(_) => true,
            // The state follows the parenthesised command name: Z zombie, X dead.
            Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| matches!(rest.trim_start().chars().next(), Some('Z' | 'X'))),
        }
    }
}

/// On SIGTERM (what `mpirun` sends every process when one has failed, or when its own
/// `--timeout` expires), raise `flag` so that every wait gives up with the ranks it was
/// missing; if the process has not ended shortly after, end it with the conventional 143.
pub(super) fn watch_for_termination(flag: Arc<AtomicBool>, process: usize) {
    let Ok(mut signals) = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM]) else {
        tracing::warn!("cannot watch for SIGTERM; a job ended by the launcher will not say which collective it ended");
        return;
    };
    let spawned = std::thread::Builder::new().name("finetp-sigterm".into()).spawn(move || {
        if signals.forever().next().is_some() {
            flag.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(700));
            // One write: the job's processes share the launcher's stderr.
            let line = format!("finetp: process {process}: terminated by the launcher (SIGTERM)\n");
            let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
            std::process::exit(143);
        }
    });
    if spawned.is_err() {
        tracing::warn!("cannot start the SIGTERM watcher");
    }
}
