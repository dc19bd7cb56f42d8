//! Failure paths: a member that never arrives, dies or leaves, and bad arguments.

use std::thread;
use std::time::{Duration, Instant};

use finetp_backend_cpu::comm::{InProcessComm, connect_in_process};
use finetp_core::backend::{Collective, CommError, DType, GroupSpec, InProcessRendezvous};

use super::{LONG, f32s, group, run, tensor, zeros};
use finetp_backend_cpu::CpuStorage;

const SHORT: Duration = Duration::from_millis(200);

#[test]
fn a_member_that_never_arrives_times_out() {
    let mut handles = group(3, SHORT);
    let absent = handles.pop().unwrap(); // member 2 stays alive but never calls
    let got = run(handles, |_, h| {
        let start = Instant::now();
        let mut t = f32s(vec![1.0], &[1]);
        let err = h.all_reduce_sum(&mut t).unwrap_err();
        let elapsed = start.elapsed();
        // The group is broken from now on: a later call fails at once, the same way.
        let again = h.barrier().unwrap_err();
        (err, elapsed, again)
    });
    for (err, elapsed, again) in got {
        match err {
            CommError::Timeout { group, op, missing, after, .. } => {
                assert_eq!((group.as_str(), op, missing, after), ("test[0]", "all_reduce_sum", vec![2], SHORT));
            }
            other => panic!("expected a timeout, got {other}"),
        }
        assert!(elapsed < SHORT * 3, "took {elapsed:?}");
        assert!(matches!(again, CommError::Timeout { .. }), "{again}");
    }
    let start = Instant::now();
    assert!(matches!(absent.barrier(), Err(CommError::Timeout { .. })));
    assert!(start.elapsed() < SHORT, "a broken group fails at once");
}

#[test]
fn a_panicking_member_fails_its_peers_at_once() {
    let handles = group(3, LONG);
    let start = Instant::now();
    let got: Vec<Result<(), CommError>> = thread::scope(|s| {
        let joins: Vec<_> = handles
            .into_iter()
            .enumerate()
            .map(|(i, h)| {
                s.spawn(move || {
                    if i == 2 {
                        thread::sleep(Duration::from_millis(50)); // the others are already waiting
                        panic!("member 2 dies (expected by the test)");
                    }
                    let mut t = f32s(vec![1.0; 4], &[4]);
                    let r = h.all_reduce_sum(&mut t);
                    // Later calls fail too, without waiting.
                    assert!(matches!(h.barrier(), Err(CommError::PeerFailed { .. })));
                    r
                })
            })
            .collect();
        joins.into_iter().filter_map(|j| j.join().ok()).collect()
    });
    assert_eq!(got.len(), 2);
    for r in got {
        match r {
            Err(CommError::PeerFailed { member: 2, global_rank: 12, op: "all_reduce_sum", .. }) => {}
            other => panic!("expected PeerFailed from member 2, got {other:?}"),
        }
    }
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_dropped_handle_or_unconnected_rank_is_a_failed_peer() {
    let start = Instant::now();
    let mut handles = group(2, LONG);
    drop(handles.pop());
    let err = handles[0].barrier().unwrap_err();
    assert!(matches!(err, CommError::PeerFailed { member: 1, global_rank: 11, .. }), "{err}");

    // Rank 1 ends without ever connecting: rank 0's connect fails at once, not after the timeout.
    let rv = InProcessRendezvous::new();
    let specs = GroupSpec::members("t", &[0, 1], LONG);
    rv.depart(1);
    let err = connect_in_process(&specs[0], &rv).unwrap_err();
    assert!(matches!(err, CommError::PeerFailed { member: 1, global_rank: 1, .. }), "{err}");
    assert!(start.elapsed() < Duration::from_secs(2));
}

/// Runs one call per member and returns every member's result; the group must stay usable.
fn mismatch(n: usize, f: impl Fn(usize, &InProcessComm) -> Result<(), CommError> + Sync) -> Vec<Result<(), CommError>> {
    run(group(n, LONG), |i, h| {
        let r = f(i, &h);
        h.barrier().expect("the group stays in lock-step after a rejected call");
        r
    })
}

fn is_invalid(r: &Result<(), CommError>) -> bool {
    matches!(r, Err(CommError::InvalidArgument { .. }))
}

fn is_mismatch(r: &Result<(), CommError>) -> bool {
    matches!(r, Err(CommError::Mismatch { .. }))
}

#[test]
fn argument_errors_are_reported_not_hung_or_panicked() {
    // One member passes counts of the wrong length: it gets InvalidArgument, the others Mismatch.
    let r = mismatch(3, |i, h| {
        let counts: &[usize] = if i == 1 { &[1, 1] } else { &[1, 1, 1] };
        h.all_gather(&f32s(vec![0.0; 2], &[1, 2]), counts, &mut zeros(DType::F32, &[3, 2]))
    });
    assert!(is_mismatch(&r[0]) && is_invalid(&r[1]) && is_mismatch(&r[2]), "{r:?}");

    // Different ops in the same step.
    let r = mismatch(2, |i, h| if i == 0 { h.barrier() } else { h.all_reduce_sum(&mut f32s(vec![0.0], &[1])) });
    assert!(r.iter().all(is_mismatch), "{r:?}");

    // Disagreeing counts, each locally consistent.
    let r = mismatch(2, |i, h| {
        let counts = if i == 0 { [1, 2] } else { [2, 1] };
        h.all_gather(&f32s(vec![0.0; counts[i]], &[counts[i], 1]), &counts, &mut zeros(DType::F32, &[3, 1]))
    });
    assert!(r.iter().all(is_mismatch), "{r:?}");

    // all_to_all where member 1 expects a row that member 0 does not send.
    let r = mismatch(2, |_, h| {
        h.all_to_all(
            &f32s(vec![0.0; 2], &[2, 1]),
            &[1, 1],
            &[1, 1 + h.info().rank],
            &mut zeros(DType::F32, &[2 + h.info().rank, 1]),
        )
    });
    assert!(r.iter().all(is_mismatch), "{r:?}");

    // Different dtypes / row shapes across members.
    let r = mismatch(2, |i, h| {
        let dt = if i == 0 { DType::F32 } else { DType::U32 };
        h.all_gather(&zeros(dt, &[1, 2]), &[1, 1], &mut zeros(dt, &[2, 2]))
    });
    assert!(r.iter().all(is_mismatch), "{r:?}");
    let r = mismatch(2, |i, h| h.all_reduce_sum(&mut zeros(DType::F32, &[2 + i])));
    assert!(r.iter().all(is_mismatch), "{r:?}");
    let r = mismatch(2, |i, h| h.broadcast(&mut zeros(DType::F32, &[2]), i));
    assert!(r.iter().all(is_mismatch), "{r:?}");

    // Local mistakes, in a group of 1 (no peer to tell) and of 2.
    for n in [1, 2] {
        let r = mismatch(n, |_, h| {
            h.reduce_scatter_sum(&zeros(DType::BF16, &[n, 2]), &vec![1; n], &mut zeros(DType::BF16, &[1, 2]))
        });
        assert!(r.iter().all(is_invalid), "bf16 reduce_scatter {r:?}");
        let r = mismatch(n, |_, h| h.all_reduce_sum(&mut zeros(DType::BF16, &[2])));
        assert!(r.iter().all(is_invalid), "bf16 all_reduce {r:?}");
        let r =
            mismatch(n, |_, h| h.all_gather(&zeros(DType::F32, &[2, 2]), &vec![1; n], &mut zeros(DType::F32, &[n, 2])));
        assert!(r.iter().all(is_invalid), "rows != counts[me] {r:?}");
        let r =
            mismatch(n, |_, h| h.all_gather(&zeros(DType::F32, &[1, 2]), &vec![1; n], &mut zeros(DType::F32, &[n, 3])));
        assert!(r.iter().all(is_invalid), "out row shape {r:?}");
        let r = mismatch(n, |_, h| h.broadcast(&mut zeros(DType::F32, &[2]), n));
        assert!(r.iter().all(is_invalid), "root out of range {r:?}");
        // A tensor whose shape overstates its storage must never be read through.
        let r = mismatch(n, |_, h| {
            let lying = tensor(CpuStorage::F32(vec![0.0; 2]), &[1000, 2]);
            h.all_gather(&lying, &vec![1000; n], &mut zeros(DType::F32, &[1000 * n, 2]))
        });
        assert!(r.iter().all(is_invalid), "short storage {r:?}");
        let r = mismatch(n, |_, h| {
            h.all_to_all(&zeros(DType::U32, &[1, 1]), &vec![1; n], &vec![1; n], &mut zeros(DType::U32, &[n + 1, 1]))
        });
        assert!(r.iter().all(is_invalid), "all_to_all out rows {r:?}");
    }
}
