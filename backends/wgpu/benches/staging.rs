//! What staging through the host costs a wgpu collective: the staged all-reduce and
//! all-gather of 2 wgpu ranks next to the CPU collective alone on the same bytes.
//!
//! `cargo bench -p finetp-backend-wgpu --bench staging`
//!
//! Member 0's call is measured; member 1 runs the same call in a loop on its own thread (the
//! collective keeps them in step), each member with its own device. `staged_*` = wait for the
//! device, download, the CPU collective, upload (enqueued), and a `synchronize` so the upload
//! is included; `cpu_*` = the CPU collective alone. The difference is the staging overhead
//! (see `finetp_backend_wgpu::comm` for the copies). Rows are 1024 f32 (4 KiB); the counted
//! bytes are one member's tensor.

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use divan::Bencher;
use divan::counter::BytesCount;
use finetp_backend_cpu::comm::{StagedComm, group_handles};
use finetp_backend_cpu::{CpuBackend, CpuStorage, CpuTensor};
use finetp_backend_wgpu::WgpuBackend;
use finetp_core::backend::{Backend, Collective, CommError, DType, HostTensor, Tensor};

fn main() {
    divan::main();
}

const ROW: usize = 1024;
/// Rows per member: 4 KiB (a decode token's hidden state), 64 KiB, 2 MiB.
const ROWS: [usize; 3] = [1, 16, 512];
const TIMEOUT: Duration = Duration::from_secs(600);

/// Benchmarks member 0's `call` while member 1 loops on its own thread until member 0 leaves.
fn two_members<C: Send + Sync>(bencher: Bencher, bytes: usize, members: [C; 2], call: impl Fn(&C, usize) -> Result<(), CommError> + Sync) {
    let [m0, m1] = members;
    thread::scope(|s| {
        let call = &call;
        s.spawn(move || while call(&m1, 1).is_ok() {});
        bencher.counter(BytesCount::new(bytes)).bench_local(|| call(&m0, 0).expect("collective"));
        drop(m0);
    });
}

/// One wgpu member: its device, its staged communicator and its tensors.
struct Member {
    be: WgpuBackend,
    comm: StagedComm<WgpuBackend>,
    t: Mutex<Tensor<WgpuBackend>>,
    out: Mutex<Tensor<WgpuBackend>>,
}

fn wgpu_members(rows: usize) -> Option<[Member; 2]> {
    let handles = group_handles("bench", &[0, 1], TIMEOUT);
    let mut out = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        let be = match WgpuBackend::new() {
            Ok(be) => be,
            Err(e) => {
                eprintln!("SKIP staging bench: {e}");
                return None;
            }
        };
        let t = be.upload(&HostTensor::f32(vec![i as f32; rows * ROW], &[rows, ROW]).expect("shape")).expect("upload");
        let o = be.zeros(&[2 * rows, ROW], DType::F32).expect("zeros");
        out.push(Member { comm: StagedComm::new(&be, Arc::new(h)), be, t: Mutex::new(t), out: Mutex::new(o) });
    }
    out.try_into().ok()
}

fn cpu_members(rows: usize) -> [(finetp_backend_cpu::comm::InProcessComm, Mutex<CpuTensor>, Mutex<CpuTensor>); 2] {
    let f = |v: f32, r: usize| Mutex::new(Tensor::from_parts(CpuStorage::F32(vec![v; r * ROW]), vec![r, ROW], DType::F32));
    let mut hs = group_handles("bench", &[0, 1], TIMEOUT).into_iter();
    let (h0, h1) = (hs.next().expect("member 0"), hs.next().expect("member 1"));
    [(h0, f(0.0, rows), f(0.0, 2 * rows)), (h1, f(1.0, rows), f(0.0, 2 * rows))]
}

#[divan::bench(args = ROWS, sample_count = 20)]
fn staged_all_reduce(bencher: Bencher, rows: usize) {
    let Some(members) = wgpu_members(rows) else { return };
    two_members(bencher, rows * ROW * 4, members, |m, _| {
        let mut t = m.t.lock().expect("one user");
        m.comm.all_reduce_sum(&mut t)?;
        Ok(m.be.synchronize()?)
    });
}

#[divan::bench(args = ROWS, sample_count = 20)]
fn cpu_all_reduce(bencher: Bencher, rows: usize) {
    two_members(bencher, rows * ROW * 4, cpu_members(rows), |(h, t, _), _| h.all_reduce_sum(&mut t.lock().expect("one user")));
}

#[divan::bench(args = ROWS, sample_count = 20)]
fn staged_all_gather(bencher: Bencher, rows: usize) {
    let Some(members) = wgpu_members(rows) else { return };
    two_members(bencher, rows * ROW * 4, members, |m, _| {
        let (t, mut o) = (m.t.lock().expect("one user"), m.out.lock().expect("one user"));
        m.comm.all_gather(&t, &[rows, rows], &mut o)?;
        Ok(m.be.synchronize()?)
    });
}

#[divan::bench(args = ROWS, sample_count = 20)]
fn cpu_all_gather(bencher: Bencher, rows: usize) {
    two_members(bencher, rows * ROW * 4, cpu_members(rows), |(h, t, o), _| h.all_gather(&t.lock().expect("one user"), &[rows, rows], &mut o.lock().expect("one user")));
}

/// The staging alone, no peer: download a member's tensor and write it back (what a staged
/// collective adds to the CPU one, without the rendezvous).
#[divan::bench(args = ROWS, sample_count = 20)]
fn round_trip_only(bencher: Bencher, rows: usize) {
    let Ok(be) = WgpuBackend::new() else {
        eprintln!("SKIP staging bench: no wgpu adapter");
        return;
    };
    let mut t = be.upload(&HostTensor::f32(vec![1.0; rows * ROW], &[rows, ROW]).expect("shape")).expect("upload");
    let _ = CpuBackend::new(1);
    bencher.counter(BytesCount::new(rows * ROW * 4)).bench_local(|| {
        let h = be.download(&t).expect("download");
        be.write(&mut t, &h).expect("write");
        be.synchronize().expect("sync");
    });
}
