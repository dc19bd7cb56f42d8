//! The collectives for groups that span processes ([`RemoteComm`]), run over the in-process
//! [`Mailboxes`] transport so they are tested without MPI: every collective gives exactly the
//! bits of the in-process collectives on the same inputs (sums in member order), and bad or
//! disagreeing calls and absent members fail as the in-process ones do.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use finetp_backend_cpu::comm::{InProcessComm, RemoteComm, group_handles};
use finetp_backend_cpu::{CpuStorage, CpuTensor};
use finetp_core::backend::{Collective, CommError, DType, GroupSpec, HostTransport, Mailboxes, Tensor};
use finetp_testkit::rng::Rng;

const LONG: Duration = Duration::from_secs(20);

/// Test data of very different magnitudes, so that the summation order shows in the bits.
fn spread_f32(rng: &mut Rng) -> f32 {
    rng.f32() * [1e-3f32, 1.0, 1e3][rng.below(3)]
}

fn tensor(s: CpuStorage, shape: &[usize]) -> CpuTensor {
    let dtype = s.dtype();
    Tensor::from_parts(s, shape.to_vec(), dtype)
}

fn zeros(dtype: DType, shape: &[usize]) -> CpuTensor {
    tensor(CpuStorage::zeros(dtype, shape.iter().product()).expect("a stored dtype"), shape)
}

fn random(rng: &mut Rng, dtype: DType, shape: &[usize]) -> CpuTensor {
    let n = shape.iter().product();
    let s = match dtype {
        DType::F32 => CpuStorage::F32((0..n).map(|_| spread_f32(rng)).collect()),
        DType::U32 => CpuStorage::U32((0..n).map(|_| rng.next_u64() as u32).collect()),
        _ => unreachable!("not used"),
    };
    tensor(s, shape)
}

fn ranks(n: usize) -> Vec<usize> {
    (0..n).map(|i| 10 + 3 * i).collect()
}

fn remote_group(n: usize, timeout: Duration) -> Vec<RemoteComm> {
    let mail: Arc<dyn HostTransport> = Arc::new(Mailboxes::new());
    let specs = GroupSpec::members("span", &ranks(n), timeout);
    thread::scope(|s| {
        let joins: Vec<_> = specs.iter().map(|spec| {
            let mail = mail.clone();
            s.spawn(move || RemoteComm::connect(spec, mail).expect("connect"))
        }).collect();
        joins.into_iter().map(|j| j.join().expect("connect thread")).collect()
    })
}

fn on_members<C: Send, R: Send>(handles: Vec<C>, f: impl Fn(usize, C) -> R + Sync) -> Vec<R> {
    thread::scope(|s| {
        let f = &f;
        let joins: Vec<_> = handles.into_iter().enumerate().map(|(i, h)| s.spawn(move || f(i, h))).collect();
        joins.into_iter().map(|j| j.join().expect("member thread panicked")).collect()
    })
}

/// Every collective, one after another on one group (as a decode step calls them), on
/// member `me`'s inputs; returns each output's bytes.
fn every_collective(me: usize, n: usize, comm: &dyn Collective<finetp_backend_cpu::CpuBackend>, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed * 1000 + me as u64);
    let counts: Vec<usize> = (0..n).map(|i| [3, 0, 5, 1][i % 4]).collect();
    let total: usize = counts.iter().sum();
    let row = 7;
    let mut outs = Vec::new();
    for dtype in [DType::F32, DType::U32] {
        let mut t = random(&mut rng, dtype, &[4, 301]);
        comm.all_reduce_sum(&mut t).expect("all_reduce_sum");
        outs.push(t.buffer().as_bytes().to_vec());
    }
    let mine = random(&mut rng, DType::F32, &[counts[me], row]);
    let mut out = zeros(DType::F32, &[total, row]);
    comm.all_gather(&mine, &counts, &mut out).expect("all_gather");
    outs.push(out.buffer().as_bytes().to_vec());
    let all = random(&mut rng, DType::F32, &[total, row]);
    let mut out = zeros(DType::F32, &[counts[me], row]);
    comm.reduce_scatter_sum(&all, &counts, &mut out).expect("reduce_scatter_sum");
    outs.push(out.buffer().as_bytes().to_vec());
    // Member i sends (i + j) % 3 rows to member j.
    let send_counts: Vec<usize> = (0..n).map(|j| (me + j) % 3).collect();
    let recv_counts: Vec<usize> = (0..n).map(|i| (i + me) % 3).collect();
    let send = random(&mut rng, DType::U32, &[send_counts.iter().sum(), 2]);
    let mut out = zeros(DType::U32, &[recv_counts.iter().sum(), 2]);
    comm.all_to_all(&send, &send_counts, &recv_counts, &mut out).expect("all_to_all");
    outs.push(out.buffer().as_bytes().to_vec());
    let mut t = random(&mut rng, DType::F32, &[2, 5]);
    comm.broadcast(&mut t, n - 1).expect("broadcast");
    outs.push(t.buffer().as_bytes().to_vec());
    comm.barrier().expect("barrier");
    outs
}

#[test]
fn every_collective_gives_the_bits_of_the_in_process_collectives() {
    for n in [2, 3, 4] {
        let reference = on_members(group_handles("ref", &ranks(n), LONG), |i, h: InProcessComm| every_collective(i, n, &h, 7));
        let got = on_members(remote_group(n, LONG), |i, h: RemoteComm| every_collective(i, n, &h, 7));
        assert_eq!(got, reference, "group of {n}");
        // Every member holds the same sums.
        assert!(got.iter().all(|o| o[0] == got[0][0] && o[1] == got[0][1]), "group of {n}: all-reduce differs between members");
    }
}

#[test]
fn a_member_with_bad_arguments_fails_and_its_peers_see_a_mismatch_at_once() {
    let started = Instant::now();
    let got = on_members(remote_group(3, LONG), |i, h: RemoteComm| {
        let rows = if i == 1 { 2 } else { 1 }; // member 1's tensor disagrees with the counts
        let mine = zeros(DType::F32, &[rows, 4]);
        let mut out = zeros(DType::F32, &[3, 4]);
        h.all_gather(&mine, &[1, 1, 1], &mut out)
    });
    assert!(matches!(&got[1], Err(CommError::InvalidArgument { .. })), "{:?}", got[1]);
    for i in [0, 2] {
        match &got[i] {
            Err(CommError::Mismatch { detail, .. }) => assert!(detail.contains("member 1 (global rank 13) passed bad arguments"), "{detail}"),
            other => panic!("member {i}: expected a mismatch, got {other:?}"),
        }
    }
    assert!(started.elapsed() < LONG / 2, "the peers waited for the timeout");
}

#[test]
fn members_that_call_different_collectives_see_a_mismatch() {
    let got = on_members(remote_group(2, LONG), |i, h: RemoteComm| {
        let mut t = zeros(DType::F32, &[2, 2]);
        if i == 0 { h.all_reduce_sum(&mut t) } else { h.broadcast(&mut t, 0) }
    });
    for r in &got {
        assert!(matches!(r, Err(CommError::Mismatch { .. })), "{r:?}");
    }
}

#[test]
fn a_member_that_never_comes_is_a_timeout_naming_its_global_rank() {
    let short = Duration::from_millis(300);
    let mut handles = remote_group(3, short);
    let absent = handles.pop().expect("three members");
    let started = Instant::now();
    let got = on_members(handles, |_, h: RemoteComm| h.barrier());
    for r in got {
        match r {
            Err(CommError::Timeout { missing, ranks, .. }) => assert_eq!((missing, ranks), (vec![2], vec![16])),
            other => panic!("expected a timeout, got {other:?}"),
        }
    }
    assert!(started.elapsed() < short * 4, "took {:?}", started.elapsed());
    drop(absent);
}
