//! The shared state of one group and the barrier every collective is built from.
//!
//! One `Mutex<State>` + `Condvar` per group. The barrier is generation-counted (like
//! `std::sync::Barrier`): a waiter leaves when the generation it arrived in has completed, so a
//! fast member may already be arriving at the next barrier while a slow one has not yet woken
//! from the last, and consecutive collectives can never be confused with each other.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use finetp_core::backend::{CommError, GroupSpec};

use super::check;
use super::post::{Post, Src};

/// Longest single sleep (a `Duration::MAX` timeout means "wait forever").
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// Why a group can no longer be used.
#[derive(Debug, Clone)]
enum Broken {
    Timeout { op: &'static str, missing: Vec<usize> },
    PeerFailed { member: usize },
}

struct State {
    /// The member that last took the lock: if it panicked holding it, it is the one to blame.
    holder: usize,
    /// Who has arrived at the current barrier.
    here: Vec<bool>,
    count: usize,
    /// Completed barriers.
    generation: u64,
    posts: Vec<Post>,
    /// Set by the last arrival of a round: why the posts disagree.
    verdict: Option<String>,
    /// A member whose data movement panicked in the current round.
    round_failed: Option<usize>,
    /// False once a member's handle is dropped.
    alive: Vec<bool>,
    broken: Option<Broken>,
}

/// One group's rendezvous, shared by its members' handles.
pub(super) struct Shared {
    /// The group (its `rank` is the first member's to arrive, and is not used).
    pub spec: GroupSpec,
    /// `spec.name()`, for every error message.
    pub name: String,
    pub global_ranks: Vec<usize>,
    pub timeout: Duration,
    state: Mutex<State>,
    cv: Condvar,
}

impl Shared {
    pub fn new(spec: GroupSpec) -> Self {
        let (name, global_ranks, timeout) = (spec.name(), spec.global_ranks.clone(), spec.timeout);
        let n = global_ranks.len();
        let state = State {
            holder: 0,
            here: vec![false; n],
            count: 0,
            generation: 0,
            posts: (0..n).map(|_| Post::default()).collect(),
            verdict: None,
            round_failed: None,
            alive: vec![true; n],
            broken: None,
        };
        Self { spec, name, global_ranks, timeout, state: Mutex::new(state), cv: Condvar::new() }
    }

    fn size(&self) -> usize {
        self.global_ranks.len()
    }

    /// Locks the state. A lock poisoned by a panicking member is recovered, and the group is
    /// marked broken by that member: the caller then reports an error instead of panicking.
    fn lock(&self, me: usize) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(mut st) => {
                st.holder = me;
                st
            }
            Err(poisoned) => Self::poisoned(poisoned.into_inner()),
        }
    }

    fn poisoned(mut st: MutexGuard<'_, State>) -> MutexGuard<'_, State> {
        let member = st.holder;
        st.broken.get_or_insert(Broken::PeerFailed { member });
        st
    }

    /// Sleeps until notified or `dur` passes; recovers from poisoning like [`Self::lock`].
    fn wait<'a>(&'a self, st: MutexGuard<'a, State>, dur: Duration) -> (MutexGuard<'a, State>, bool) {
        match self.cv.wait_timeout(st, dur) {
            Ok((st, res)) => (st, res.timed_out()),
            Err(poisoned) => {
                let (st, res) = poisoned.into_inner();
                (Self::poisoned(st), res.timed_out())
            }
        }
    }

    fn error(&self, broken: &Broken, op: &'static str) -> CommError {
        let group = self.name.clone();
        match broken {
            Broken::Timeout { op, missing } => {
                CommError::Timeout { group, op, after: self.timeout, missing: missing.clone(), ranks: missing.iter().map(|&m| self.global_ranks.get(m).copied().unwrap_or(usize::MAX)).collect() }
            }
            &Broken::PeerFailed { member } => CommError::PeerFailed {
                group,
                op,
                member,
                global_rank: self.global_ranks.get(member).copied().unwrap_or(usize::MAX),
            },
        }
    }

    /// The error this group is failing with, if any: broken already, or a member has left
    /// (which breaks it now and wakes everyone).
    fn failure(&self, st: &mut State, op: &'static str) -> Option<CommError> {
        if st.broken.is_none() {
            let member = st.alive.iter().position(|a| !a)?;
            st.broken = Some(Broken::PeerFailed { member });
            self.cv.notify_all();
        }
        st.broken.as_ref().map(|b| self.error(b, op))
    }

    /// Completes the current barrier and wakes its waiters.
    fn complete(&self, st: &mut State) {
        st.count = 0;
        st.here.fill(false);
        st.generation = st.generation.wrapping_add(1);
        self.cv.notify_all();
    }

    /// The first barrier of a round: posts this member's arguments (`fill`), waits for all
    /// members, and returns `read` of every member's post, in member order.
    ///
    /// Fails with `Timeout` after the group's timeout, with `PeerFailed` as soon as a member's
    /// handle is dropped, and with `Mismatch` / `InvalidArgument` when the posts disagree.
    pub fn arrive(
        &self,
        me: usize,
        op: &'static str,
        fill: impl FnOnce(&mut Post),
        read: impl Fn(&Post) -> Src,
    ) -> Result<Vec<Src>, CommError> {
        let deadline = Instant::now().checked_add(self.timeout);
        let mut st = self.lock(me);
        if let Some(err) = self.failure(&mut st, op) {
            return Err(err);
        }
        let post = &mut st.posts[me];
        post.reset();
        fill(post);
        post.op = op;
        st.here[me] = true;
        st.count += 1;
        let generation = st.generation;
        if st.count == self.size() {
            st.verdict = check::cross(&st.posts, &self.global_ranks);
            st.round_failed = None;
            self.complete(&mut st);
        } else {
            while st.generation == generation {
                let left = deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(Instant::now()));
                let mut err = self.failure(&mut st, op);
                if err.is_none() && left.is_zero() {
                    let missing = (0..self.size()).filter(|&i| !st.here[i]).collect();
                    let broken = Broken::Timeout { op, missing };
                    err = Some(self.error(&broken, op));
                    st.broken = Some(broken);
                    self.cv.notify_all();
                }
                if let Some(err) = err {
                    st.here[me] = false;
                    st.count -= 1;
                    return Err(err);
                }
                st = self.wait(st, left.min(MAX_WAIT)).0;
            }
        }
        if let Some(detail) = &st.verdict {
            let group = self.name.clone();
            return Err(match &st.posts[me].invalid {
                Some(own) => CommError::InvalidArgument { group, op, detail: own.clone() },
                None => CommError::Mismatch { group, op, detail: detail.clone() },
            });
        }
        Ok(st.posts.iter().map(read).collect())
    }

    /// A later barrier of a round (after moving data). Cannot time out or fail early: a
    /// member's buffer must stay valid while a peer may be reading it, and peers between two
    /// barriers only copy memory, so the wait is bounded. `failed` reports that this member's
    /// data movement panicked; returns the member (if any) whose movement failed this round.
    pub fn barrier(&self, me: usize, failed: bool) -> Option<usize> {
        let mut st = self.lock(me);
        if failed {
            st.round_failed.get_or_insert(me);
        }
        st.here[me] = true;
        st.count += 1;
        let generation = st.generation;
        if st.count == self.size() {
            self.complete(&mut st);
        } else {
            while st.generation == generation {
                let (next, timed_out) = self.wait(st, self.timeout.clamp(Duration::from_millis(100), MAX_WAIT));
                st = next;
                if timed_out && st.generation == generation {
                    tracing::warn!(
                        group = %self.name,
                        "members still copying after {:?}; waiting for them to finish",
                        self.timeout
                    );
                }
            }
        }
        st.round_failed
    }

    /// Poisons the lock the way a member panicking inside it would.
    #[cfg(test)]
    pub fn poison(&self, me: usize) {
        let _ = std::thread::scope(|s| {
            s.spawn(|| {
                let _st = self.lock(me);
                panic!("member {me} panics holding the lock (expected by the test)");
            })
            .join()
        });
    }

    /// Marks member `me` as gone (its handle was dropped) and wakes every waiter.
    pub fn leave(&self, me: usize) {
        let mut st = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(a) = st.alive.get_mut(me) {
            *a = false;
        }
        self.cv.notify_all();
    }
}
