//! Failure paths that need the collectives' internals: a member whose data movement panics, and a
//! lock poisoned by a panicking member.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use finetp_core::backend::{Collective, CommError};

use super::group_handles;
use super::post::Src;

#[test]
fn a_panic_while_moving_data_waits_for_peers_and_fails_them() {
    let handles = group_handles("t", &[4, 5], Duration::from_secs(20));
    let slow_done = OnceLock::new();
    let (r0, unwound) = std::thread::scope(|s| {
        let (h0, h1, slow_done) = (&handles[0], &handles[1], &slow_done);
        let j0 = s.spawn(move || {
            let mut phase = |_: &[Src]| {
                std::thread::sleep(Duration::from_millis(50));
                slow_done.set(Instant::now()).unwrap();
            };
            h0.m.round("test_op", |_| {}, |p| p.buf, [&mut phase])
        });
        let j1 = s.spawn(move || {
            let mut phase = |_: &[Src]| panic!("member 1's copy panics (expected by the test)");
            let r = catch_unwind(AssertUnwindSafe(|| h1.m.round("test_op", |_| {}, |p| p.buf, [&mut phase])));
            assert!(r.is_err(), "the panic is resumed on its own member");
            Instant::now()
        });
        (j0.join().unwrap(), j1.join().unwrap())
    });
    assert!(matches!(r0, Err(CommError::PeerFailed { member: 1, global_rank: 5, op: "test_op", .. })), "{r0:?}");
    // Member 1 did not unwind (which would free its buffers) while member 0 was still copying.
    assert!(unwound >= *slow_done.get().unwrap());
    // Both sides completed the round, so the group is still in lock-step.
    std::thread::scope(|s| {
        let j = s.spawn(|| handles[1].barrier());
        handles[0].barrier().unwrap();
        j.join().unwrap().unwrap();
    });
}

#[test]
fn a_poisoned_lock_is_an_error_not_a_panic() {
    let handles = group_handles("t", &[0, 1], Duration::from_secs(20));
    handles[0].m.shared.poison(1);
    let start = Instant::now();
    let err = handles[0].barrier().unwrap_err();
    assert!(matches!(err, CommError::PeerFailed { member: 1, .. }), "{err}");
    assert!(start.elapsed() < Duration::from_secs(1));
}
