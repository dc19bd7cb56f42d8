//! The cross-process transport: MPI point-to-point between processes, [`Mailboxes`] between
//! ranks of one process, one deadline for the whole exchange.
//!
//! Each message goes from one member to one member of one group: its MPI tag names the group
//! and the pair, so messages of different groups never match each other, and messages of
//! one pair arrive in order (MPI's non-overtaking rule; each member's calls on a group are
//! sequential). A message is the payload followed by a [`TRAILER`]-byte trailer (the sender's
//! call: op name and fingerprint; at the end, so that neither side moves the payload to add
//! or strip it); the receiver posts a receive for exactly the bytes it expects and the
//! trailer, so a longer message is a truncation and a shorter one a wrong count — both a
//! [`CommError::Mismatch`].
//!
//! Every send and receive is a persistent request (it owns its buffer) tested in a loop with
//! a backoff. When the deadline passes, or a missing member's process is seen dead, or the
//! launcher sends SIGTERM, the requests still in flight are leaked on purpose — MPI may still
//! write into their buffers, and the job is over — and the error names the members that did
//! not arrive. The process then exits without `MPI_Finalize`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferrompi::{Communicator, MpiErrorClass, PersistentRequest};
use finetp_core::backend::{Call, CommError, GroupRole, GroupSpec, HostTransport, Mailboxes, check_message};
use finetp_core::config::Component;

use super::liveness::Peers;

/// Bytes after the payload: fingerprint (8), op name length (1), op name (up to 31).
pub(super) const TRAILER: usize = finetp_core::backend::TRAILER_ROOM;

/// Tags stay below this (the MPI standard only promises 32767; Open MPI and MPICH give at
/// least 2^29): a layout whose tags would not fit (7·W³ ≥ 2^29, a world of more than about 400
/// ranks) is refused when its groups connect.
const TAG_LIMIT: u64 = 1 << 29;

/// Receives hold at least this much payload, so that a peer's refusal (its complaint as text)
/// fits even where the call expects fewer bytes, and is reported as such, not as a truncation.
const MIN_RECV: usize = 256;

/// How often a wait looks at whether the missing members' processes are alive.
const LIVENESS_EVERY: Duration = Duration::from_millis(100);

pub(crate) struct MpiTransport {
    comm: Communicator,
    process: usize,
    ranks_per_process: usize,
    pub(super) mail: Mailboxes,
    peers: Peers,
    /// Raised by the SIGTERM watcher: waits give up at once.
    pub(super) terminated: Arc<AtomicBool>,
    /// Raised when a collective is abandoned: MPI is then not finalised.
    pub(super) failed: AtomicBool,
}

/// A receive still in flight: from which member, into which slot of the result.
struct Incoming {
    slot: usize,
    from: usize,
    len: usize,
    req: PersistentRequest<u8>,
}

impl MpiTransport {
    pub(super) fn new(comm: Communicator, process: usize, ranks_per_process: usize, peers: Peers) -> Self {
        Self { comm, process, ranks_per_process, mail: Mailboxes::new(), peers, terminated: Arc::default(), failed: AtomicBool::new(false) }
    }

    /// The process that runs global rank `rank`.
    pub(super) fn process_of(&self, rank: usize) -> usize {
        rank / self.ranks_per_process.max(1)
    }

    fn is_local(&self, spec: &GroupSpec, member: usize) -> bool {
        self.process_of(spec.global_rank_of(member)) == self.process
    }

    /// The tag of messages from member `from` to member `to` of `spec`.
    fn tag(&self, spec: &GroupSpec, from: usize, to: usize) -> Result<i32, CommError> {
        let role = match spec.role {
            GroupRole::Component(Component::Embedding) => 0,
            GroupRole::Component(Component::LmHead) => 1,
            GroupRole::Component(Component::OProj) => 2,
            GroupRole::Component(Component::Mlp) => 3,
            GroupRole::Dp => 4,
            GroupRole::Tp => 5,
            GroupRole::Named(_) => 6,
        };
        // One-to-one over every group of the world: group indices and member positions are
        // below the world size `W`, so (group, from, to) in mixed radix (7·W groups, W² pairs
        // per group, whatever the group's own size) never repeats. Groups of different sizes
        // share the process pairs, so the radix must not be the group's size.
        let world = self.peers.len() as u64 * self.ranks_per_process as u64;
        let group = role * world + spec.index as u64;
        let tag = (group * world + from as u64) * world + to as u64;
        if tag >= TAG_LIMIT {
            return Err(CommError::Transport {
                group: spec.name(),
                op: "connect",
                detail: format!("a world of {world} ranks needs MPI tags beyond {TAG_LIMIT}; finetp's MPI transport supports smaller worlds"),
            });
        }
        Ok(tag as i32)
    }

    fn mpi_error(&self, spec: &GroupSpec, op: &'static str, what: &str, e: ferrompi::Error) -> CommError {
        CommError::Transport { group: spec.name(), op, detail: format!("MPI {what} failed: {e}") }
    }

    /// Gives up on the requests in flight: MPI may still use their buffers, so they are leaked.
    fn abandon(&self, incoming: Vec<Incoming>, outgoing: Vec<(usize, PersistentRequest<u8>)>) {
        self.failed.store(true, Ordering::SeqCst);
        for i in incoming {
            std::mem::forget(i.req);
        }
        for (_, r) in outgoing {
            std::mem::forget(r);
        }
    }
}

fn trailer(call: Call) -> [u8; TRAILER] {
    let mut h = [0u8; TRAILER];
    h[..8].copy_from_slice(&call.fingerprint.to_le_bytes());
    let name = call.op.as_bytes();
    let n = name.len().min(TRAILER - 9);
    h[8] = n as u8;
    h[9..9 + n].copy_from_slice(&name[..n]);
    h
}

/// The sender's call from a trailer (op names interned: they are `&'static str` in [`Call`]).
fn parse_trailer(h: &[u8]) -> Call {
    let fingerprint = u64::from_le_bytes(h[..8].try_into().unwrap_or([0; 8]));
    let n = usize::from(h[8]).min(TRAILER - 9);
    let name = String::from_utf8_lossy(&h[9..9 + n]);
    Call { op: finetp_core::intern(&name), fingerprint }
}


impl HostTransport for MpiTransport {
    fn exchange(&self, spec: &GroupSpec, call: Call, sends: Vec<(usize, Vec<u8>)>, recvs: &[(usize, usize)]) -> Result<Vec<Vec<u8>>, CommError> {
        let start = Instant::now();
        let deadline = start.checked_add(spec.timeout);
        let me = spec.rank;
        let mut outgoing: Vec<(usize, PersistentRequest<u8>)> = Vec::new();
        let mut incoming: Vec<Incoming> = Vec::new();
        let mut local: Vec<(usize, usize, usize)> = Vec::new(); // (slot, from, len)
        let mut got: Vec<Option<Vec<u8>>> = vec![None; recvs.len()];
        let posted = (|| -> Result<(), CommError> {
            // Receives first, so that a peer's message finds its receive posted.
            for (slot, &(from, len)) in recvs.iter().enumerate() {
                if self.is_local(spec, from) {
                    local.push((slot, from, len));
                    continue;
                }
                let src = self.process_of(spec.global_rank_of(from)) as i32;
                let mut req = self.comm.recv_init(vec![0u8; len.max(MIN_RECV) + TRAILER], src, self.tag(spec, from, me)?).map_err(|e| self.mpi_error(spec, call.op, "recv_init", e))?;
                req.start().map_err(|e| self.mpi_error(spec, call.op, "start (receive)", e))?;
                incoming.push(Incoming { slot, from, len, req });
            }
            for (to, bytes) in sends {
                if self.is_local(spec, to) {
                    self.mail.post(spec, to, call, bytes);
                    continue;
                }
                let dst = self.process_of(spec.global_rank_of(to)) as i32;
                // The senders leave room for the trailer: no reallocation here.
                let mut msg = bytes;
                msg.extend_from_slice(&trailer(call));
                let mut req = self.comm.send_init(msg, dst, self.tag(spec, me, to)?).map_err(|e| self.mpi_error(spec, call.op, "send_init", e))?;
                req.start().map_err(|e| self.mpi_error(spec, call.op, "start (send)", e))?;
                outgoing.push((to, req));
            }
            Ok(())
        })();
        if let Err(e) = posted {
            self.abandon(incoming, outgoing);
            return Err(e);
        }
        let mut backoff = Backoff::default();
        let mut last_liveness = Instant::now();
        loop {
            let progressed = match self.progress(spec, call, &mut incoming, &mut outgoing, &mut local, &mut got) {
                Ok(p) => p,
                Err(e) => {
                    self.abandon(incoming, outgoing);
                    return Err(e);
                }
            };
            if incoming.is_empty() && outgoing.is_empty() && local.is_empty() {
                return Ok(got.into_iter().map(Option::unwrap_or_default).collect());
            }
            let missing = || -> Vec<usize> {
                let mut m: Vec<usize> = incoming.iter().map(|i| i.from).chain(local.iter().map(|l| l.1)).chain(outgoing.iter().map(|o| o.0)).collect();
                m.sort_unstable();
                m.dedup();
                m
            };
            let failure = if self.terminated.load(Ordering::SeqCst) {
                let ranks: Vec<usize> = missing().iter().map(|&m| spec.global_rank_of(m)).collect();
                Some(CommError::Transport {
                    group: spec.name(),
                    op: call.op,
                    detail: format!("the launcher is ending the job (SIGTERM) while this member waited for global ranks {ranks:?}"),
                })
            } else if last_liveness.elapsed() >= LIVENESS_EVERY {
                last_liveness = Instant::now();
                missing().into_iter().find(|&m| !self.is_local(spec, m) && self.peers.is_dead(self.process_of(spec.global_rank_of(m)))).map(|m| {
                    CommError::PeerFailed { group: spec.name(), op: call.op, member: m, global_rank: spec.global_rank_of(m) }
                })
            } else {
                None
            };
            let failure = failure.or_else(|| {
                deadline.filter(|d| Instant::now() >= *d).map(|_| {
                    let missing = missing();
                    let ranks = missing.iter().map(|&m| spec.global_rank_of(m)).collect();
                    CommError::Timeout { group: spec.name(), op: call.op, after: spec.timeout, missing, ranks }
                })
            });
            if let Some(e) = failure {
                self.abandon(incoming, outgoing);
                return Err(e);
            }
            if progressed {
                backoff = Backoff::default();
            } else {
                backoff.wait();
            }
        }
    }
}

impl MpiTransport {
    /// One pass over everything in flight; whether anything completed.
    fn progress(
        &self,
        spec: &GroupSpec,
        call: Call,
        incoming: &mut Vec<Incoming>,
        outgoing: &mut Vec<(usize, PersistentRequest<u8>)>,
        local: &mut Vec<(usize, usize, usize)>,
        got: &mut [Option<Vec<u8>>],
    ) -> Result<bool, CommError> {
        let mut progressed = false;
        let mut k = 0;
        while k < incoming.len() {
            let i = &mut incoming[k];
            match i.req.test() {
                Ok(None) => k += 1,
                Ok(Some(status)) => {
                    let i = incoming.swap_remove(k);
                    let count = status.count.unwrap_or(0);
                    let mut buf = i.req.into_buffer().map_err(|e| self.mpi_error(spec, call.op, "receive", e))?;
                    if count < TRAILER {
                        return Err(CommError::Mismatch { group: spec.name(), op: call.op, detail: format!("member {} sent a message without a trailer", i.from) });
                    }
                    let theirs = parse_trailer(&buf[count - TRAILER..count]);
                    buf.truncate(count - TRAILER);
                    check_message(spec, call, i.from, i.len, theirs, &buf)?;
                    got[i.slot] = Some(buf);
                    progressed = true;
                }
                Err(ferrompi::Error::Mpi { class: MpiErrorClass::Truncate, .. }) => {
                    let from = i.from;
                    return Err(CommError::Mismatch {
                        group: spec.name(),
                        op: call.op,
                        detail: format!("member {from} (global rank {}) sent more bytes than this member's {} expects (another call, or other counts)", spec.global_rank_of(from), call.op),
                    });
                }
                Err(e) => return Err(self.mpi_error(spec, call.op, "receive", e)),
            }
        }
        let mut k = 0;
        while k < outgoing.len() {
            match outgoing[k].1.test() {
                Ok(None) => k += 1,
                Ok(Some(_)) => {
                    drop(outgoing.swap_remove(k));
                    progressed = true;
                }
                Err(e) => return Err(self.mpi_error(spec, call.op, "send", e)),
            }
        }
        let mut k = 0;
        while k < local.len() {
            let (slot, from, len) = local[k];
            match self.mail.try_take(spec, from)? {
                None => k += 1,
                Some(m) => {
                    check_message(spec, call, from, len, m.call, &m.bytes)?;
                    got[slot] = Some(m.bytes);
                    local.swap_remove(k);
                    progressed = true;
                }
            }
        }
        Ok(progressed)
    }
}

/// Spin briefly (a collective's peers usually arrive within microseconds), then yield, then
/// sleep up to 50 µs: waiting ranks leave the cores to the ranks that compute, and a large
/// message (which MPI moves only while its ends call into it) still progresses.
#[derive(Default)]
struct Backoff {
    polls: u32,
}

impl Backoff {
    fn wait(&mut self) {
        self.polls = self.polls.saturating_add(1);
        match self.polls {
            0..=64 => std::hint::spin_loop(),
            65..=256 => std::thread::yield_now(),
            n => std::thread::sleep(Duration::from_micros(u64::from((n - 256).min(50)))),
        }
    }
}
