//! Graph capture on the CPU: a recorded step replays exactly what eager execution computes,
//! reading new inputs each replay, with collectives across rank threads; host round trips are
//! refused during capture.

use std::time::Duration;

use finetp_backend_cpu::comm::group_handles;
use finetp_backend_cpu::{CpuBackend, CpuTensor};
use finetp_core::backend::{Backend, BackendError, Collective, DType, Gemm, HostTensor, Kernels};

fn host(v: Vec<f32>, shape: &[usize]) -> HostTensor {
    HostTensor::f32(v, shape).unwrap()
}

fn values(be: &CpuBackend, t: &CpuTensor) -> Vec<f32> {
    be.download(t).unwrap().to_f32_vec().unwrap()
}

/// `out = Σ_{i<3} (x·wᵀ + b)` through temporaries that are dropped inside the step, and an
/// accumulator that starts from `zeros`: the replayed graph must re-zero it and keep the
/// dropped temporaries' memory.
fn step(be: &CpuBackend, x: &CpuTensor, w: &CpuTensor, b: &CpuTensor) -> CpuTensor {
    let mut acc = be.zeros(&[2, 3], DType::F32).unwrap();
    for _ in 0..3 {
        let mut y = be.zeros(&[2, 3], DType::F32).unwrap();
        be.linear(x, w, Some(b), &mut y).unwrap();
        be.add_assign(&mut acc, &y).unwrap();
    } // each `y` is dropped here, during capture
    acc
}

#[test]
fn a_replay_equals_eager_execution_on_new_inputs() {
    let be = CpuBackend::new(2).unwrap();
    let w = be.upload(&host((0..12).map(|i| i as f32 * 0.5).collect(), &[3, 4])).unwrap();
    let b = be.upload(&host(vec![1.0, -1.0, 0.5], &[3])).unwrap();
    let mut x = be.upload(&host(vec![0.0; 8], &[2, 4])).unwrap();
    be.begin_capture().unwrap();
    let out = step(&be, &x, &w, &b);
    let mut graph = be.end_capture().unwrap();
    // 1 zeros + 3 × (zeros, linear, add_assign): each `zeros` records its re-zeroing.
    assert_eq!(graph.ops(), 10, "recorded calls");
    for k in 1..4 {
        let xs: Vec<f32> = (0..8).map(|i| (i * k) as f32 - 3.0).collect();
        be.write(&mut x, &host(xs.clone(), &[2, 4])).unwrap();
        // SAFETY: x, w, b and out are alive and untouched during the replay.
        unsafe { graph.replay().unwrap() };
        let eager = step(&be, &be.upload(&host(xs, &[2, 4])).unwrap(), &w, &b);
        assert_eq!(values(&be, &out), values(&be, &eager), "replay {k} must equal the eager step bit for bit");
    }
}

#[test]
fn host_round_trips_are_refused_during_capture() {
    let be = CpuBackend::new(1).unwrap();
    let t = be.zeros(&[2], DType::F32).unwrap();
    be.begin_capture().unwrap();
    let unsupported = |r: Result<(), BackendError>, what: &str| match r {
        Err(BackendError::Unsupported(m)) => assert!(m.contains("graph capture"), "{what}: {m}"),
        other => panic!("{what} during capture must be refused, got {other:?}"),
    };
    unsupported(be.download(&t).map(drop), "download");
    unsupported(be.upload(&host(vec![1.0], &[1])).map(drop), "upload");
    unsupported(be.write(&mut be.zeros(&[1], DType::F32).unwrap(), &host(vec![1.0], &[1])), "write");
    unsupported(be.begin_capture(), "a nested capture");
    be.end_capture().unwrap();
    assert!(be.download(&t).is_ok(), "after capture the host is reachable again");
    assert!(be.end_capture().is_err(), "ending a capture that is not running");
}

#[test]
fn collectives_are_recorded_and_replayed_in_lock_step() {
    let handles = group_handles("test", &[0, 1, 2], Duration::from_secs(10));
    let results: Vec<Vec<Vec<f32>>> = std::thread::scope(|s| {
        let joins: Vec<_> = handles
            .into_iter()
            .enumerate()
            .map(|(r, h)| {
                s.spawn(move || {
                    let be = CpuBackend::new(1).unwrap();
                    let mut mine = be.upload(&host(vec![0.0; 2], &[1, 2])).unwrap();
                    let counts = [1, 1, 1];
                    be.begin_capture().unwrap();
                    let mut all = be.zeros(&[3, 2], DType::F32).unwrap();
                    h.all_gather(&mine, &counts, &mut all).unwrap();
                    let mut summed = be.zeros(&[1, 2], DType::F32).unwrap();
                    h.reduce_scatter_sum(&all, &counts, &mut summed).unwrap();
                    let mut graph = be.end_capture().unwrap();
                    assert_eq!(graph.ops(), 4, "two zeros, two collectives");
                    (1..=3)
                        .map(|k| {
                            let v = (r + 1) as f32 * k as f32;
                            be.write(&mut mine, &host(vec![v, -v], &[1, 2])).unwrap();
                            // SAFETY: every tensor the graph touches is alive and idle.
                            unsafe { graph.replay().unwrap() };
                            values(&be, &all).into_iter().chain(values(&be, &summed)).collect()
                        })
                        .collect()
                })
            })
            .collect();
        joins.into_iter().map(|j| j.join().unwrap()).collect()
    });
    for (r, per_replay) in results.iter().enumerate() {
        for (i, got) in per_replay.iter().enumerate() {
            let k = (i + 1) as f32;
            let gathered: Vec<f32> = (1..=3).flat_map(|m| [m as f32 * k, -(m as f32) * k]).collect();
            // Row r of the sum over 3 members of the same gathered rows: 3 × member r's row.
            let row = [3.0 * (r + 1) as f32 * k, -3.0 * (r + 1) as f32 * k];
            assert_eq!(&got[..6], &gathered[..], "rank {r} replay {k}: all_gather");
            assert_eq!(&got[6..], &row[..], "rank {r} replay {k}: reduce_scatter");
        }
    }
}
