//! Staged collectives: 1–4 ranks on threads, each with its own wgpu device, give exactly what
//! the CPU backend's collectives give on the same data (they are the same code, behind a
//! download and an upload), and errors come back on every member instead of a hang.

mod common;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;
use finetp_backend_cpu::comm::group_handles;
use finetp_backend_cpu::{CpuBackend, CpuTensor};
use finetp_backend_wgpu::{StagedComm, WgpuBackend, WgpuTensor};
use finetp_core::backend::{Backend, Collective, CommError, DType, HostTensor};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Member `me`'s data for a collective: distinct per member, shape `[rows, 3]`.
fn data(me: usize, rows: usize, dtype: DType, salt: u64) -> HostTensor {
    let mut r = Rng::new(salt * 31 + me as u64);
    match dtype {
        DType::U32 => host_u32(&(0..rows * 3).map(|_| r.below(1000)).collect::<Vec<_>>(), &[rows, 3]),
        dt => host(&r.f32s(rows * 3), &[rows, 3], dt),
    }
}

/// Runs every collective on wgpu (staged) and on the CPU with the same inputs; returns the
/// pairs of results (wgpu, cpu) as host tensors.
fn member(me: usize, n: usize, be: &WgpuBackend, wg: &StagedComm, cc: &dyn Collective<CpuBackend>) -> Vec<(String, HostTensor, HostTensor)> {
    let cpu = cpu();
    let mut out = Vec::new();
    let counts: Vec<usize> = (0..n).map(|i| [2, 0, 3, 1][i % 4]).collect();
    let total: usize = counts.iter().sum();
    let mut push = |what: &str, g: &WgpuTensor, c: &CpuTensor| out.push((what.to_string(), be.download(g).unwrap(), cpu.download(c).unwrap()));
    for dt in [DType::F32, DType::U32] {
        let h = data(me, 4, dt, 1);
        let (mut g, mut c) = both(be, &cpu, &h);
        wg.all_reduce_sum(&mut g).unwrap();
        cc.all_reduce_sum(&mut c).unwrap();
        push(&format!("all_reduce_sum {dt}"), &g, &c);
    }
    for dt in [DType::F32, DType::BF16, DType::U32] {
        let h = data(me, counts[me], dt, 2);
        let (g, c) = both(be, &cpu, &h);
        let (mut go, mut co) = zeros_both(be, &cpu, &[total, 3], dt);
        wg.all_gather(&g, &counts, &mut go).unwrap();
        cc.all_gather(&c, &counts, &mut co).unwrap();
        push(&format!("all_gather {dt}"), &go, &co);
    }
    let h = data(me, total, DType::F32, 3);
    let (g, c) = both(be, &cpu, &h);
    let (mut go, mut co) = zeros_both(be, &cpu, &[counts[me], 3], DType::F32);
    wg.reduce_scatter_sum(&g, &counts, &mut go).unwrap();
    cc.reduce_scatter_sum(&c, &counts, &mut co).unwrap();
    push("reduce_scatter_sum", &go, &co);
    // all_to_all: member i sends (i + j) % 3 rows to member j.
    let send: Vec<usize> = (0..n).map(|j| (me + j) % 3).collect();
    let recv: Vec<usize> = (0..n).map(|i| (i + me) % 3).collect();
    let h = data(me, send.iter().sum(), DType::F32, 4);
    let (g, c) = both(be, &cpu, &h);
    let (mut go, mut co) = zeros_both(be, &cpu, &[recv.iter().sum(), 3], DType::F32);
    wg.all_to_all(&g, &send, &recv, &mut go).unwrap();
    cc.all_to_all(&c, &send, &recv, &mut co).unwrap();
    push("all_to_all", &go, &co);
    let h = data(me, 2, DType::F32, 5);
    let (mut g, mut c) = both(be, &cpu, &h);
    wg.broadcast(&mut g, n - 1).unwrap();
    cc.broadcast(&mut c, n - 1).unwrap();
    push("broadcast", &g, &c);
    wg.barrier().unwrap();
    out
}

#[test]
fn staged_collectives_equal_the_cpu_collectives_on_1_to_4_ranks() {
    if backend().is_none() {
        return;
    }
    // A group of one stages nothing (device-side copies), with the same results and checks.
    for n in [1, 2, 3, 4] {
        let ranks: Vec<usize> = (0..n).collect();
        let wgpu_group = group_handles("wgpu", &ranks, TIMEOUT);
        let cpu_group = group_handles("cpu", &ranks, TIMEOUT);
        let results: Vec<_> = thread::scope(|s| {
            let hs: Vec<_> = wgpu_group
                .into_iter()
                .zip(cpu_group)
                .enumerate()
                .map(|(me, (w, c))| {
                    s.spawn(move || {
                        let be = WgpuBackend::new().expect("wgpu");
                        let staged = StagedComm::new(&be, Arc::new(w));
                        assert_eq!(staged.info().size(), n);
                        member(me, n, &be, &staged, &c)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().expect("member thread")).collect()
        });
        for (me, r) in results.iter().enumerate() {
            for (what, g, c) in r {
                assert!(g == c, "{n} ranks, member {me}, {what}: staged wgpu result equals the CPU collective's exactly");
            }
        }
    }
}

#[test]
fn a_mismatch_or_a_departed_peer_is_an_error_on_every_member() {
    if backend().is_none() {
        return;
    }
    let handles = group_handles("bad", &[0, 1], TIMEOUT);
    let errs: Vec<CommError> = thread::scope(|s| {
        let hs: Vec<_> = handles
            .into_iter()
            .enumerate()
            .map(|(me, h)| {
                s.spawn(move || {
                    let be = WgpuBackend::new().expect("wgpu");
                    let staged = StagedComm::new(&be, Arc::new(h));
                    // The members disagree on the counts.
                    let counts = if me == 0 { vec![1, 1] } else { vec![1, 2] };
                    let mine = be.zeros(&[counts[me], 3], DType::F32).unwrap();
                    let mut out = be.zeros(&[counts.iter().sum(), 3], DType::F32).unwrap();
                    staged.all_gather(&mine, &counts, &mut out).expect_err("counts disagree")
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("member thread")).collect()
    });
    for e in &errs {
        assert!(matches!(e, CommError::Mismatch { .. } | CommError::InvalidArgument { .. }), "{e}");
    }
    // A member that leaves: the other fails at once, not after the timeout.
    let mut handles = group_handles("gone", &[0, 1], TIMEOUT);
    drop(handles.pop());
    let be = WgpuBackend::new().expect("wgpu");
    let staged = StagedComm::new(&be, Arc::new(handles.pop().expect("member 0")));
    let mut t = be.zeros(&[2, 3], DType::F32).unwrap();
    let t0 = std::time::Instant::now();
    let e = staged.all_reduce_sum(&mut t).expect_err("peer left");
    assert!(matches!(e, CommError::PeerFailed { .. }) && t0.elapsed() < TIMEOUT, "{e}");
}
