//! The rendezvous of ranks that are threads of one process.

use std::collections::{HashMap, HashSet};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::rendezvous::{Rendezvous, SharedObject};
use super::{CommError, GroupKey, GroupSpec};

/// Longest single sleep (a `Duration::MAX` timeout means "wait forever").
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// One exchange of one group in progress.
struct Round {
    global_ranks: Vec<usize>,
    posts: Vec<Option<Vec<u8>>>,
    /// Members that have read the result; the round is dropped when all have.
    taken: usize,
    /// The member that gave up on this round (timed out, or saw a peer leave): the round can
    /// never complete, and every member waiting or arriving later fails at once.
    abandoned_by: Option<usize>,
}

#[derive(Default)]
struct State {
    /// Exchanges in progress, by group and sequence number.
    rounds: HashMap<(GroupKey, u64), Round>,
    /// The sequence number of each member's next exchange on each group.
    next: HashMap<(GroupKey, usize), u64>,
    /// Objects handed out by `local_shared`, with how many members have taken them.
    shared: HashMap<(GroupKey, &'static str), (SharedObject, usize)>,
    /// Global ranks that have ended: nobody waits for them.
    departed: HashSet<usize>,
}

/// Every group of one in-process world meets here: one `Mutex` + `Condvar`, no spinning.
///
/// Share it between the rank threads (by reference or in an `Arc`). When a rank's thread ends,
/// successfully or not, the launcher calls [`depart`](Self::depart): a member still waited for
/// by its peers then fails them at once with [`CommError::PeerFailed`] instead of a timeout.
#[derive(Default)]
pub struct InProcessRendezvous {
    state: Mutex<State>,
    cv: Condvar,
}

impl InProcessRendezvous {
    pub fn new() -> Self {
        Self::default()
    }

    /// Global rank `rank` has ended: exchanges that still wait for it fail.
    pub fn depart(&self, rank: usize) {
        self.lock().departed.insert(rank);
        self.cv.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain maps behind: nothing to repair.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Rendezvous for InProcessRendezvous {
    fn all_gather_bytes(&self, spec: &GroupSpec, mine: &[u8]) -> Result<Vec<Vec<u8>>, CommError> {
        let op = "rendezvous";
        let (key, me, n) = (spec.key(), spec.rank, spec.size());
        if me >= n {
            return Err(CommError::InvalidArgument { group: spec.name(), op, detail: format!("member {me} of a group of {n}") });
        }
        let deadline = Instant::now().checked_add(spec.timeout);
        let mut st = self.lock();
        let seq = {
            let next = st.next.entry((key, me)).or_insert(0);
            *next += 1;
            *next - 1
        };
        let round = st.rounds.entry((key, seq)).or_insert_with(|| Round {
            global_ranks: spec.global_ranks.clone(),
            posts: vec![None; n],
            taken: 0,
            abandoned_by: None,
        });
        if round.global_ranks != spec.global_ranks {
            return Err(CommError::Mismatch {
                group: spec.name(),
                op,
                detail: format!("members {:?} and {:?} both call themselves {}", round.global_ranks, spec.global_ranks, spec.name()),
            });
        }
        round.posts[me] = Some(mine.to_vec());
        self.cv.notify_all();
        loop {
            let round = st.rounds.get(&(key, seq)).expect("a round stays until every member has read it");
            let missing: Vec<usize> = (0..n).filter(|&i| round.posts[i].is_none()).collect();
            if let Some(member) = round.abandoned_by {
                return Err(CommError::PeerFailed { group: spec.name(), op, member, global_rank: spec.global_ranks[member] });
            }
            if missing.is_empty() {
                break;
            }
            let failed = if let Some(&member) = missing.iter().find(|&&i| st.departed.contains(&spec.global_ranks[i])) {
                Some(CommError::PeerFailed { group: spec.name(), op, member, global_rank: spec.global_ranks[member] })
            } else if deadline.is_some_and(|d| Instant::now() >= d) {
                Some(CommError::Timeout { group: spec.name(), op, after: spec.timeout, ranks: missing.iter().map(|&m| spec.global_rank_of(m)).collect(), missing })
            } else {
                None
            };
            if let Some(e) = failed {
                // The round can never complete now: members still waiting, and any arriving
                // late, fail too instead of completing it without this member.
                if let Some(r) = st.rounds.get_mut(&(key, seq)) {
                    r.abandoned_by = Some(me);
                }
                self.cv.notify_all();
                return Err(e);
            }
            let left = deadline.map_or(MAX_WAIT, |d| d.saturating_duration_since(Instant::now()));
            st = self.cv.wait_timeout(st, left.min(MAX_WAIT)).unwrap_or_else(PoisonError::into_inner).0;
        }
        let round = st.rounds.get_mut(&(key, seq)).expect("present");
        let all: Vec<Vec<u8>> = round.posts.iter().map(|p| p.clone().unwrap_or_default()).collect();
        round.taken += 1;
        if round.taken == n {
            st.rounds.remove(&(key, seq));
        }
        Ok(all)
    }

    fn local_shared(&self, spec: &GroupSpec, kind: &'static str, make: &dyn Fn() -> SharedObject) -> Result<Option<SharedObject>, CommError> {
        let slot = (spec.key(), kind);
        let obj = {
            let mut st = self.lock();
            let entry = st.shared.entry(slot).or_insert_with(|| (make(), 0));
            entry.1 += 1;
            let obj = entry.0.clone();
            if entry.1 == spec.size() {
                st.shared.remove(&slot);
            }
            obj
        };
        // Every member leaves with the object only once all have come, as a communicator's
        // creation does: a member that never arrives fails its peers here, not in a collective.
        if let Err(e) = self.all_gather_bytes(spec, &[]) {
            // Nobody may be handed this object any more: a late member makes a fresh one and
            // waits (and fails) on its own.
            self.lock().shared.remove(&slot);
            return Err(e);
        }
        Ok(Some(obj))
    }
}

impl std::fmt::Debug for InProcessRendezvous {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessRendezvous").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::broadcast_bytes;

    const T: Duration = Duration::from_secs(10);

    #[test]
    fn every_member_gets_every_members_bytes_in_order() {
        let rv = InProcessRendezvous::new();
        let specs = GroupSpec::members("t", &[4, 7, 9], T);
        let got: Vec<Vec<Vec<u8>>> = std::thread::scope(|s| {
            let hs: Vec<_> = specs
                .iter()
                .map(|spec| {
                    let rv = &rv;
                    s.spawn(move || {
                        let a = rv.all_gather_bytes(spec, &[spec.rank as u8]).unwrap();
                        let b = broadcast_bytes(rv, spec, 2, &[42, spec.rank as u8]).unwrap();
                        vec![a.concat(), b]
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for g in got {
            assert_eq!(g, vec![vec![0, 1, 2], vec![42, 2]]);
        }
    }

    #[test]
    fn local_shared_hands_one_object_to_all() {
        let rv = InProcessRendezvous::new();
        let specs = GroupSpec::members("t", &[0, 1], T);
        let objs: Vec<SharedObject> = std::thread::scope(|s| {
            let hs: Vec<_> = specs
                .iter()
                .map(|spec| {
                    let rv = &rv;
                    s.spawn(move || rv.local_shared(spec, "k", &|| Arc::new(spec.rank)).unwrap().unwrap())
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(Arc::ptr_eq(&objs[0], &objs[1]));
    }

    #[test]
    fn a_departed_member_fails_its_peers_at_once_and_a_missing_one_times_out() {
        let rv = InProcessRendezvous::new();
        let specs = GroupSpec::members("t", &[3, 5], Duration::from_secs(600));
        rv.depart(5);
        let t0 = Instant::now();
        let e = rv.all_gather_bytes(&specs[0], &[]).unwrap_err();
        assert!(matches!(e, CommError::PeerFailed { member: 1, global_rank: 5, .. }), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(5));
        let specs = GroupSpec::members("u", &[0, 1, 2], Duration::from_millis(50));
        let e = rv.all_gather_bytes(&specs[1], &[]).unwrap_err();
        assert!(matches!(&e, CommError::Timeout { missing, .. } if *missing == vec![0, 2]), "{e}");
    }

    #[test]
    fn a_member_that_gave_up_fails_a_late_peer_instead_of_completing_without_it() {
        let rv = InProcessRendezvous::new();
        let specs = GroupSpec::members("late", &[0, 1], Duration::from_millis(50));
        // Member 0 times out waiting for member 1 (alive, just slow) ...
        assert!(matches!(rv.all_gather_bytes(&specs[0], &[]), Err(CommError::Timeout { .. })));
        // ... so member 1, arriving late, must not find a completed round.
        let e = rv.local_shared(&specs[1], "k", &|| Arc::new(1u8)).unwrap_err();
        assert!(matches!(e, CommError::PeerFailed { member: 0, .. }), "{e}");
    }
}
