//! Bandwidth of the in-process collectives next to a plain memcpy of the same bytes.
//!
//! `cargo bench -p finetp-backend-cpu --bench collectives`
//!
//! Every figure is *per member*: the benchmarked closure is member 0's call, the other
//! `N - 1` members run the same call in a loop on their own threads (the collective itself keeps
//! them in step). The counted bytes are what one member's call produces or consumes:
//! - `all_gather`: `N·size` bytes gathered into each member's output (`size` per member);
//! - `reduce_scatter`: `N·size` bytes of input summed, each member keeping `size`;
//! - `memcpy`: one thread copying `N·size` bytes (the floor of an all-gather on one core);
//! - `barrier`: one rendezvous, no data (the latency floor of every collective);
//! - `memcpy_parallel`: `N` threads each copying `N·size` bytes at once, in step through a
//!   `std::sync::Barrier` (the same memory traffic and thread count as the all-gather).

use std::sync::Barrier;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use divan::Bencher;
use divan::counter::BytesCount;
use finetp_backend_cpu::comm::{InProcessComm, group_handles};
use finetp_backend_cpu::{CpuStorage, CpuTensor};
use finetp_core::backend::{Collective, DType, Tensor};

fn main() {
    divan::main();
}

const MIB: usize = 1 << 20;
/// f32 elements per row (4 KiB rows).
const ROW: usize = 1024;
/// Long enough for divan's pauses between samples; members leave on drop, not on timeout.
const TIMEOUT: Duration = Duration::from_secs(600);

fn f32s(rows: usize, value: f32) -> CpuTensor {
    Tensor::from_parts(CpuStorage::F32(vec![value; rows * ROW]), vec![rows, ROW], DType::F32)
}

/// Runs `call` on members `1..N` in a loop on their own threads until member 0's handle is
/// dropped, and benchmarks member 0's `call`.
fn bench_group<const N: usize>(
    bencher: Bencher,
    bytes: usize,
    call: impl Fn(&InProcessComm, usize) -> Result<(), finetp_core::backend::CommError> + Sync,
) {
    let mut handles = group_handles("bench", &(0..N).collect::<Vec<_>>(), TIMEOUT).into_iter();
    let h0 = handles.next().expect("N >= 1");
    thread::scope(|s| {
        let call = &call;
        for (i, h) in handles.enumerate() {
            s.spawn(move || while call(&h, i + 1).is_ok() {});
        }
        bencher.counter(BytesCount::new(bytes)).bench_local(|| call(&h0, 0).expect("collective"));
        drop(h0); // the others' next call fails with PeerFailed and they stop
    });
}

#[divan::bench(consts = [2, 4], args = [1, 16], sample_count = 20)]
fn all_gather<const N: usize>(bencher: Bencher, mib: usize) {
    let rows = mib * MIB / (ROW * 4);
    let counts = vec![rows; N];
    let mine: Vec<CpuTensor> = (0..N).map(|i| f32s(rows, i as f32)).collect();
    let outs: Vec<std::sync::Mutex<CpuTensor>> = (0..N).map(|_| std::sync::Mutex::new(f32s(rows * N, 0.0))).collect();
    bench_group::<N>(bencher, N * mib * MIB, |h, i| {
        let mut out = outs[i].lock().expect("one user per member");
        h.all_gather(&mine[i], &counts, &mut out)
    });
}

#[divan::bench(consts = [2, 4], args = [1, 16], sample_count = 20)]
fn reduce_scatter<const N: usize>(bencher: Bencher, mib: usize) {
    let rows = mib * MIB / (ROW * 4);
    let counts = vec![rows; N];
    let all: Vec<CpuTensor> = (0..N).map(|i| f32s(rows * N, i as f32)).collect();
    let outs: Vec<std::sync::Mutex<CpuTensor>> = (0..N).map(|_| std::sync::Mutex::new(f32s(rows, 0.0))).collect();
    bench_group::<N>(bencher, N * mib * MIB, |h, i| {
        let mut out = outs[i].lock().expect("one user per member");
        h.reduce_scatter_sum(&all[i], &counts, &mut out)
    });
}

/// The fixed cost of one rendezvous (a data collective pays two, all_reduce_sum three).
#[divan::bench(consts = [2, 4])]
fn barrier<const N: usize>(bencher: Bencher) {
    let mut handles = group_handles("bench", &(0..N).collect::<Vec<_>>(), TIMEOUT).into_iter();
    let h0 = handles.next().expect("N >= 1");
    thread::scope(|s| {
        for h in handles {
            s.spawn(move || while h.barrier().is_ok() {});
        }
        bencher.bench_local(|| h0.barrier().expect("barrier"));
        drop(h0);
    });
}

#[divan::bench(consts = [2, 4], args = [1, 16], sample_count = 20)]
fn memcpy<const N: usize>(bencher: Bencher, mib: usize) {
    let src = vec![1u8; N * mib * MIB];
    let mut dst = vec![0u8; N * mib * MIB];
    bencher.counter(BytesCount::new(src.len())).bench_local(|| dst.copy_from_slice(&src));
}

#[divan::bench(consts = [2, 4], args = [1, 16], sample_count = 20)]
fn memcpy_parallel<const N: usize>(bencher: Bencher, mib: usize) {
    let bytes = N * mib * MIB;
    let barrier = Barrier::new(N);
    // The number of barrier rounds member 0 ran; a helper that has passed more rounds than that
    // is past the final one and stops. (A plain "stop" flag would race: a helper released
    // from the last measured round could see it set and miss the final round.)
    let rounds = AtomicUsize::new(usize::MAX);
    thread::scope(|s| {
        for _ in 1..N {
            let (barrier, rounds) = (&barrier, &rounds);
            s.spawn(move || {
                let (src, mut dst) = (vec![1u8; bytes], vec![0u8; bytes]);
                for passed in 1.. {
                    barrier.wait();
                    if passed > rounds.load(Ordering::Acquire) {
                        break;
                    }
                    dst.copy_from_slice(&src);
                }
            });
        }
        let (src, mut dst) = (vec![1u8; bytes], vec![0u8; bytes]);
        let mut ran = 0;
        bencher.counter(BytesCount::new(bytes)).bench_local(|| {
            barrier.wait();
            dst.copy_from_slice(&src);
            ran += 1;
        });
        rounds.store(ran, Ordering::Release);
        barrier.wait();
    });
}
