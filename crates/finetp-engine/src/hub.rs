//! Where requests meet the ranks: the front end (a server's handlers, or `generate` for an
//! offline batch) submits and cancels requests here; every rank takes its replica's requests
//! from here between steps and reports their events back.
//!
//! Lock-step is kept by construction: each replica's requests and cancellations are
//! append-only logs, and a replica's TP ranks take the same stretch of them at the same step
//! (TP rank 0's view, broadcast on the TP group, so every TP rank of a replica runs the same
//! batch). Which replica serves a request is decided once, at submission: the least loaded
//! (fewest requests submitted and not finished), ties to the lowest — vLLM's DP load balancing,
//! and round-robin for a batch submitted at once. A rank with nothing to do still runs every
//! step its peers run (a dummy step of zero rows); when no rank has work the ranks wait here
//! (at most [`IDLE_WAIT`] before they meet again) instead of spinning collectives.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::request::{Event, Request, Sink};

/// How long an idle rank waits in the hub before its next (empty) step's exchange.
pub(crate) const IDLE_WAIT: Duration = Duration::from_millis(50);

/// Why a submission is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    #[error("the engine is shutting down and takes no new requests")]
    Closed,
    #[error("{waiting} requests are already waiting (the queue holds at most {limit})")]
    QueueFull { waiting: usize, limit: usize },
    #[error("request id {0} is already being served")]
    DuplicateId(usize),
    #[error("the engine failed: {0}")]
    Failed(String),
}

/// What a rank sees of its replica at the start of a step (absolute log positions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub requests: usize,
    pub cancels: usize,
    pub closed: bool,
    pub generation: u64,
}

/// One replica's append-only log; entries every TP rank has taken are trimmed.
struct Log<T> {
    base: usize,
    items: VecDeque<T>,
    /// Per TP rank: how far it has taken.
    taken: Vec<usize>,
}

impl<T: Clone> Log<T> {
    fn new(tp: usize) -> Self {
        Self { base: 0, items: VecDeque::new(), taken: vec![0; tp.max(1)] }
    }

    fn end(&self) -> usize {
        self.base + self.items.len()
    }

    fn take(&mut self, tp: usize, to: usize) -> Vec<T> {
        let from = self.taken[tp];
        let to = to.min(self.end()).max(from);
        let out = self.items.range(from - self.base..to - self.base).cloned().collect();
        self.taken[tp] = to;
        let low = self.taken.iter().copied().min().unwrap_or(to);
        while self.base < low {
            self.items.pop_front();
            self.base += 1;
        }
        out
    }
}

struct Live {
    replica: usize,
    sink: Sink,
    admitted: bool,
}

/// Memory one rank holds, as it reported it once loaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RankMemory {
    pub weight_bytes: usize,
    pub kv_cache_bytes: usize,
    /// KV-cache blocks in its pool, and in use now.
    pub kv_blocks: usize,
    pub kv_blocks_used: usize,
}

/// What the front end can read about the engine (`/metrics`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct HubStats {
    /// Submitted and not yet running on any rank.
    pub waiting: usize,
    /// Requests running on each replica.
    pub running: Vec<usize>,
    /// Per global rank, once it has loaded.
    pub ranks: Vec<Option<RankMemory>>,
}

struct State {
    generation: u64,
    closed: bool,
    failed: Option<String>,
    requests: Vec<Log<Arc<Request>>>,
    cancels: Vec<Log<usize>>,
    /// Submitted and not finished, per replica.
    outstanding: Vec<usize>,
    running: Vec<usize>,
    waiting: usize,
    live: HashMap<usize, Live>,
    ranks: Vec<Option<RankMemory>>,
}

/// The meeting point of a front end and the ranks of one engine (see the module doc).
pub struct Hub {
    state: Mutex<State>,
    changed: Condvar,
    max_waiting: usize,
}

impl Hub {
    /// A hub for `replicas` DP replicas of `tp` ranks each; at most `max_waiting` requests may
    /// wait to start (beyond it [`submit`](Self::submit) answers [`SubmitError::QueueFull`]).
    pub fn new(replicas: usize, tp: usize, max_waiting: usize) -> Self {
        let replicas = replicas.max(1);
        Self {
            state: Mutex::new(State {
                generation: 0,
                closed: false,
                failed: None,
                requests: (0..replicas).map(|_| Log::new(tp)).collect(),
                cancels: (0..replicas).map(|_| Log::new(tp)).collect(),
                outstanding: vec![0; replicas],
                running: vec![0; replicas],
                waiting: 0,
                live: HashMap::new(),
                ranks: vec![None; replicas * tp.max(1)],
            }),
            changed: Condvar::new(),
            max_waiting,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A rank that panicked while holding the lock left the state consistent (every update
        // is a few assignments); keep serving the others.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn bump(&self, s: &mut State) {
        s.generation += 1;
        self.changed.notify_all();
    }

    /// Queues `req` on the least loaded replica, its events to go to `sink`; returns the replica.
    ///
    /// # Errors
    /// [`SubmitError`]: closed, the queue full, the id in use, or the engine failed.
    pub fn submit(&self, req: Request, sink: Sink) -> Result<usize, SubmitError> {
        let mut s = self.lock();
        if let Some(f) = &s.failed {
            return Err(SubmitError::Failed(f.clone()));
        }
        if s.closed {
            return Err(SubmitError::Closed);
        }
        if s.waiting >= self.max_waiting {
            return Err(SubmitError::QueueFull { waiting: s.waiting, limit: self.max_waiting });
        }
        if s.live.contains_key(&req.id) {
            return Err(SubmitError::DuplicateId(req.id));
        }
        let replica = (0..s.outstanding.len()).min_by_key(|&r| (s.outstanding[r], r)).unwrap_or(0);
        s.outstanding[replica] += 1;
        s.waiting += 1;
        s.live.insert(req.id, Live { replica, sink, admitted: false });
        s.requests[replica].items.push_back(Arc::new(req));
        self.bump(&mut s);
        Ok(replica)
    }

    /// Stops request `id` (its client went away, or a stop string was seen): its replica drops
    /// it at the next step, frees its KV blocks and reports `Finished { Cancelled }`. Unknown
    /// or finished ids are ignored.
    pub fn cancel(&self, id: usize) {
        let mut s = self.lock();
        if let Some(replica) = s.live.get(&id).map(|l| l.replica) {
            s.cancels[replica].items.push_back(id);
            self.bump(&mut s);
        }
    }

    /// Takes no more requests; the ranks finish what they have and then end.
    pub fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        self.bump(&mut s);
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// The engine has failed (a rank's error): waiting ranks end, new submissions are refused
    /// and every live request finishes as failed.
    pub fn fail(&self, why: &str) {
        let mut s = self.lock();
        if s.failed.is_none() {
            s.failed = Some(why.to_string());
        }
        // Nothing waits or runs any more.
        s.waiting = 0;
        s.running.iter_mut().for_each(|r| *r = 0);
        s.outstanding.iter_mut().for_each(|r| *r = 0);
        for (_, live) in s.live.drain() {
            live.sink.send(Event::Finished { reason: crate::FinishReason::Failed(why.to_string()), replica: live.replica, prompt_tokens: 0, completion_tokens: 0 });
        }
        self.bump(&mut s);
    }

    pub fn failure(&self) -> Option<String> {
        self.lock().failed.clone()
    }

    pub fn stats(&self) -> HubStats {
        let s = self.lock();
        HubStats { waiting: s.waiting, running: s.running.clone(), ranks: s.ranks.clone() }
    }

    // ---- the ranks' side ----

    pub(crate) fn snapshot(&self, replica: usize) -> Snapshot {
        let s = self.lock();
        Snapshot { requests: s.requests[replica].end(), cancels: s.cancels[replica].end(), closed: s.closed, generation: s.generation }
    }

    /// The requests and cancellations of `replica` up to `upto` that TP rank `tp` has not yet taken.
    pub(crate) fn take(&self, replica: usize, tp: usize, upto: &Snapshot) -> (Vec<Arc<Request>>, Vec<usize>) {
        let mut s = self.lock();
        let reqs = s.requests[replica].take(tp, upto.requests);
        let cancels = s.cancels[replica].take(tp, upto.cancels);
        (reqs, cancels)
    }

    /// Waits until anything changes after `generation`, or `at_most` has passed, or the engine
    /// failed; `false` if it failed.
    ///
    /// Bounded on purpose: the ranks of an idle world each wait here and then meet in the next
    /// step's exchange, and a rank whose snapshot was taken before a change (while a peer's was
    /// taken after it) would otherwise return at once while that peer waited for a change that
    /// has already happened: every rank is back in the exchange within `at_most`.
    pub(crate) fn wait_change(&self, generation: u64, at_most: Duration) -> bool {
        let deadline = std::time::Instant::now() + at_most;
        let mut s = self.lock();
        while s.generation == generation && s.failed.is_none() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            s = self.changed.wait_timeout(s, left).unwrap_or_else(std::sync::PoisonError::into_inner).0;
        }
        s.failed.is_none()
    }

    /// Request `id` has started running (reported by TP rank 0 of its replica).
    pub(crate) fn admitted(&self, id: usize) {
        let mut s = self.lock();
        if let Some(l) = s.live.get_mut(&id).filter(|l| !l.admitted) {
            l.admitted = true;
            let r = l.replica;
            s.waiting -= 1;
            s.running[r] += 1;
        }
    }

    /// An event of request `id` (reported by TP rank 0 of its replica); `Finished` ends it.
    pub(crate) fn emit(&self, id: usize, event: Event) {
        let mut s = self.lock();
        let finished = matches!(event, Event::Finished { .. });
        let Some(live) = s.live.get(&id) else { return };
        live.sink.send(event);
        if finished && let Some(l) = s.live.remove(&id) {
            s.outstanding[l.replica] -= 1;
            if l.admitted {
                s.running[l.replica] -= 1;
            } else {
                s.waiting -= 1;
            }
        }
    }

    pub(crate) fn rank_memory(&self, rank: usize, m: RankMemory) {
        let mut s = self.lock();
        if let Some(slot) = s.ranks.get_mut(rank) {
            *slot = Some(m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{Discard, FinishReason};

    fn req(id: usize) -> Request {
        Request { id, prompt: vec![1], max_tokens: 1, ..Request::default() }
    }

    #[test]
    fn submissions_go_to_the_least_loaded_replica_and_the_queue_is_bounded() {
        let hub = Hub::new(3, 1, 4);
        let sink: Sink = Arc::new(Discard);
        let placed: Vec<usize> = (0..4).map(|i| hub.submit(req(i), sink.clone()).unwrap()).collect();
        assert_eq!(placed, [0, 1, 2, 0], "round-robin while every replica is as loaded");
        assert_eq!(hub.submit(req(9), sink.clone()), Err(SubmitError::QueueFull { waiting: 4, limit: 4 }));
        assert_eq!(hub.submit(req(0), sink.clone()).unwrap_err(), SubmitError::QueueFull { waiting: 4, limit: 4 });
        hub.admitted(1);
        assert_eq!(hub.submit(req(1), sink.clone()), Err(SubmitError::DuplicateId(1)));
        hub.emit(1, Event::Finished { reason: FinishReason::Length, replica: 1, prompt_tokens: 1, completion_tokens: 1 });
        assert_eq!(hub.stats().running, [0, 0, 0]);
        // Replica 1 is now the least loaded.
        assert_eq!(hub.submit(req(5), sink.clone()), Ok(1));
        hub.close();
        assert_eq!(hub.submit(req(6), sink), Err(SubmitError::Closed));
    }

    #[test]
    fn tp_ranks_take_the_same_stretch_and_taken_entries_are_trimmed() {
        let hub = Hub::new(1, 2, 100);
        let sink: Sink = Arc::new(Discard);
        for i in 0..3 {
            hub.submit(req(i), sink.clone()).unwrap();
        }
        let snap = hub.snapshot(0);
        hub.submit(req(3), sink.clone()).unwrap();
        let ids = |v: Vec<Arc<Request>>| v.iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(hub.take(0, 0, &snap).0), [0, 1, 2]);
        // TP rank 1 reads later, but takes up to the agreed snapshot only.
        assert_eq!(ids(hub.take(0, 1, &snap).0), [0, 1, 2]);
        assert_eq!(hub.lock().requests[0].items.len(), 1, "entries both have taken are dropped");
        let later = hub.snapshot(0);
        assert_eq!(ids(hub.take(0, 1, &later).0), [3]);
        assert_eq!(ids(hub.take(0, 0, &later).0), [3]);
        hub.cancel(3);
        let (_, c) = hub.take(0, 0, &hub.snapshot(0));
        assert_eq!(c, [3]);
    }
}
