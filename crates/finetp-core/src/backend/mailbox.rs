//! Point-to-point messages between members that are threads of one process: one FIFO per
//! (group, sender, receiver), one `Mutex` + `Condvar` for all of them.
//!
//! [`Mailboxes`] is a complete [`HostTransport`] when every member lives in this process (the
//! CPU backend's tests of its cross-process collectives use it that way, so those collectives
//! are tested without MPI), and the in-process half of the MPI launcher's transport, which
//! sends through it to members in its own process and through MPI to the rest.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::transport::check_message;
use super::{Call, CommError, GroupKey, GroupSpec, HostTransport};

/// Longest single sleep (a huge timeout means "wait forever").
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// One message in flight.
#[derive(Debug)]
pub struct Envelope {
    pub call: Call,
    pub bytes: Vec<u8>,
}

#[derive(Default)]
struct State {
    queues: HashMap<(GroupKey, usize, usize), VecDeque<Envelope>>,
    /// Global ranks that have ended: nobody waits for their messages.
    departed: HashSet<usize>,
}

/// The message queues of every group of one process.
#[derive(Default)]
pub struct Mailboxes {
    state: Mutex<State>,
    cv: Condvar,
}

impl Mailboxes {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain queues behind: nothing to repair.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new run starts on the same process: every rank is back (ranks that ended in an earlier
    /// run, which finished, are not failed peers of this one).
    pub fn clear_departed(&self) {
        self.lock().departed.clear();
    }

    /// Global rank `rank` has ended: receives that wait for it fail.
    pub fn depart(&self, rank: usize) {
        self.lock().departed.insert(rank);
        self.cv.notify_all();
    }

    /// Queues `bytes` from this member of `spec` to member `to`.
    pub fn post(&self, spec: &GroupSpec, to: usize, call: Call, bytes: Vec<u8>) {
        self.lock().queues.entry((spec.key(), spec.rank, to)).or_default().push_back(Envelope { call, bytes });
        self.cv.notify_all();
    }

    /// The next message from member `from` of `spec` to this member, if one has come.
    ///
    /// # Errors
    /// [`CommError::PeerFailed`] when none has and `from` has ended.
    pub fn try_take(&self, spec: &GroupSpec, from: usize) -> Result<Option<Envelope>, CommError> {
        let mut st = self.lock();
        Self::take(&mut st, spec, from)
    }

    fn take(st: &mut State, spec: &GroupSpec, from: usize) -> Result<Option<Envelope>, CommError> {
        if let Some(m) = st.queues.get_mut(&(spec.key(), from, spec.rank)).and_then(VecDeque::pop_front) {
            return Ok(Some(m));
        }
        let global_rank = spec.global_rank_of(from);
        if st.departed.contains(&global_rank) {
            return Err(CommError::PeerFailed { group: spec.name(), op: "exchange", member: from, global_rank });
        }
        Ok(None)
    }

    /// Waits until a message from member `from` comes, `from` ends, or `deadline` passes
    /// (`Ok(None)`).
    ///
    /// # Errors
    /// As [`try_take`](Self::try_take).
    pub fn take_until(&self, spec: &GroupSpec, from: usize, deadline: Option<Instant>) -> Result<Option<Envelope>, CommError> {
        let mut st = self.lock();
        loop {
            if let Some(m) = Self::take(&mut st, spec, from)? {
                return Ok(Some(m));
            }
            let wait = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left.min(MAX_WAIT),
                    _ => return Ok(None),
                },
                None => MAX_WAIT,
            };
            st = self.cv.wait_timeout(st, wait).unwrap_or_else(PoisonError::into_inner).0;
        }
    }
}

/// Every member a thread of this process: a complete transport.
impl HostTransport for Mailboxes {
    fn exchange(&self, spec: &GroupSpec, call: Call, sends: Vec<(usize, Vec<u8>)>, recvs: &[(usize, usize)]) -> Result<Vec<Vec<u8>>, CommError> {
        for (to, bytes) in sends {
            self.post(spec, to, call, bytes);
        }
        let deadline = Instant::now().checked_add(spec.timeout);
        let mut got = Vec::with_capacity(recvs.len());
        for (k, &(from, len)) in recvs.iter().enumerate() {
            match self.take_until(spec, from, deadline)? {
                Some(m) => {
                    check_message(spec, call, from, len, m.call, &m.bytes)?;
                    got.push(m.bytes);
                }
                None => {
                    let missing: Vec<usize> = recvs[k..].iter().map(|&(m, _)| m).collect();
                    let ranks = missing.iter().map(|&m| spec.global_rank_of(m)).collect();
                    return Err(CommError::Timeout { group: spec.name(), op: call.op, after: spec.timeout, missing, ranks });
                }
            }
        }
        Ok(got)
    }
}
