//! The wgpu GEMM on this machine's adapter (lavapipe on the dev/CI machine) next to the CPU
//! backend's GEMM, same shapes, one run.
//!
//! `cargo bench -p finetp-backend-wgpu --bench gemm`
//!
//! - `wgpu_*`: `y [m, n] = x [m, k] · w [n, k]ᵀ` on a [`WgpuBackend`]; one sample is the
//!   enqueue plus a `synchronize` (submit and wait: about 0.07 ms of the figure on lavapipe).
//! - `cpu_*`: the same call on a 2-thread [`CpuBackend`].
//!
//! The bytes counter is the weight bytes (read once per call), so B/s is the effective weight
//! bandwidth; the items counter is the flops (`2·m·n·k`), so item/s is flop/s. Without an
//! adapter the `wgpu_*` entries print a skip line and measure nothing.

use divan::Bencher;
use divan::counter::{BytesCount, ItemsCount};
use finetp_backend_cpu::CpuBackend;
use finetp_backend_wgpu::WgpuBackend;
use finetp_core::backend::{Backend, DType, Gemm, HostData, HostTensor, Tensor};
use half::bf16;

fn main() {
    divan::main();
}

const MS: [usize; 3] = [1, 8, 32];

/// Deterministic values in [-1, 1) (SplitMix64).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect()
}

fn host(n: usize, k: usize, dtype: DType, seed: u64) -> HostTensor {
    let v = values(n * k, seed);
    let data = match dtype {
        DType::BF16 => HostData::BF16(v.iter().map(|&x| bf16::from_f32(x)).collect()),
        _ => HostData::F32(v),
    };
    HostTensor::new(data, &[n, k]).expect("shape")
}

fn run<B: Backend + Gemm>(bencher: Bencher, be: &B, n: usize, k: usize, dtype: DType, m: usize) {
    let w: Tensor<B> = be.upload(&host(n, k, dtype, 7)).expect("upload w");
    let x = be.upload(&host(m, k, DType::F32, 3)).expect("upload x");
    let mut y = be.zeros(&[m, n], DType::F32).expect("y");
    bencher.counter(BytesCount::new(w.size_in_bytes())).counter(ItemsCount::new(2 * m * n * k)).bench_local(|| {
        be.linear(&x, &w, None, &mut y).expect("linear");
        be.synchronize().expect("sync");
    });
}

fn wgpu(bencher: Bencher, n: usize, k: usize, dtype: DType, m: usize) {
    match WgpuBackend::new() {
        Ok(be) => run(bencher, &be, n, k, dtype, m),
        Err(e) => eprintln!("SKIP wgpu bench: {e}"),
    }
}

fn cpu(bencher: Bencher, n: usize, k: usize, dtype: DType, m: usize) {
    run(bencher, &CpuBackend::new(2).expect("pool"), n, k, dtype, m);
}

#[divan::bench(args = MS, sample_count = 10)]
fn wgpu_f32_1024x1024(b: Bencher, m: usize) {
    wgpu(b, 1024, 1024, DType::F32, m);
}

#[divan::bench(args = MS, sample_count = 10)]
fn wgpu_bf16_1024x1024(b: Bencher, m: usize) {
    wgpu(b, 1024, 1024, DType::BF16, m);
}

#[divan::bench(args = MS, sample_count = 10)]
fn wgpu_f32_2048x2048(b: Bencher, m: usize) {
    wgpu(b, 2048, 2048, DType::F32, m);
}

#[divan::bench(args = MS, sample_count = 10)]
fn wgpu_bf16_2048x2048(b: Bencher, m: usize) {
    wgpu(b, 2048, 2048, DType::BF16, m);
}

#[divan::bench(args = MS, sample_count = 20)]
fn cpu_f32_1024x1024(b: Bencher, m: usize) {
    cpu(b, 1024, 1024, DType::F32, m);
}

#[divan::bench(args = MS, sample_count = 20)]
fn cpu_bf16_1024x1024(b: Bencher, m: usize) {
    cpu(b, 1024, 1024, DType::BF16, m);
}

#[divan::bench(args = MS, sample_count = 20)]
fn cpu_f32_2048x2048(b: Bencher, m: usize) {
    cpu(b, 2048, 2048, DType::F32, m);
}

#[divan::bench(args = MS, sample_count = 20)]
fn cpu_bf16_2048x2048(b: Bencher, m: usize) {
    cpu(b, 2048, 2048, DType::BF16, m);
}
