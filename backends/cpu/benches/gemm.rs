//! CPU GEMM at decode shapes next to the machine's two roofs.
//!
//! `cargo bench -p finetp-backend-cpu --bench gemm`
//!
//! - `linear_*`: `y [m, n] = x [m, k] · w [n, k]ᵀ` on a 2-thread [`CpuBackend`], for
//!   `m` in {1, 8, 32, 128}. The bytes counter is the weight bytes (`n·k·size`), read once per
//!   call, so divan's B/s is the *effective weight bandwidth*; the items counter is the flops
//!   (`2·m·n·k`), so item/s is flop/s.
//! - `probe_bandwidth`: sum-reduce a 256 MiB f32 array on the same 2-thread pool, 4 streams
//!   per task: the memory roof (bytes/s a weight stream could get).
//! - `probe_fma_peak`: register-only FMA chains on both threads: the compute roof (flop/s).
//!
//! A GEMM call's roofline time is `max(weight bytes / bandwidth, flops / peak)`.

use divan::Bencher;
use divan::counter::{BytesCount, ItemsCount};
use finetp_backend_cpu::{CpuBackend, CpuStorage, CpuTensor};
use finetp_core::backend::{DType, Gemm, Tensor};
use half::bf16;
use rayon::prelude::*;

fn main() {
    divan::main();
}

const THREADS: usize = 2;
const MS: [usize; 4] = [1, 8, 32, 128];

/// Deterministic values in [-1, 1) (SplitMix64), so no dependency is needed.
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

fn weights(n: usize, k: usize, dtype: DType) -> CpuTensor {
    let v = values(n * k, 7);
    let buf = match dtype {
        DType::F32 => CpuStorage::F32(v),
        DType::BF16 => CpuStorage::BF16(v.iter().map(|&x| bf16::from_f32(x)).collect()),
        other => unreachable!("bench weights are f32 or bf16, not {other}"),
    };
    Tensor::from_parts(buf, vec![n, k], dtype)
}

fn bench_linear(bencher: Bencher, n: usize, k: usize, dtype: DType, m: usize) {
    let be = CpuBackend::new(THREADS).expect("pool");
    let w = weights(n, k, dtype);
    let x = Tensor::from_parts(CpuStorage::F32(values(m * k, 3)), vec![m, k], DType::F32);
    let mut y = Tensor::from_parts(CpuStorage::F32(vec![0.0; m * n]), vec![m, n], DType::F32);
    bencher
        .counter(BytesCount::new(w.size_in_bytes()))
        .counter(ItemsCount::new(2 * m * n * k))
        .bench_local(|| be.linear(&x, &w, None, &mut y).expect("linear"));
}

#[divan::bench(args = MS, sample_count = 20)]
fn linear_f32_4096x4096(bencher: Bencher, m: usize) {
    bench_linear(bencher, 4096, 4096, DType::F32, m);
}

#[divan::bench(args = MS, sample_count = 20)]
fn linear_bf16_4096x4096(bencher: Bencher, m: usize) {
    bench_linear(bencher, 4096, 4096, DType::BF16, m);
}

#[divan::bench(args = MS, sample_count = 10)]
fn linear_f32_14336x4096(bencher: Bencher, m: usize) {
    bench_linear(bencher, 14336, 4096, DType::F32, m);
}

#[divan::bench(args = MS, sample_count = 10)]
fn linear_bf16_14336x4096(bencher: Bencher, m: usize) {
    bench_linear(bencher, 14336, 4096, DType::BF16, m);
}

/// Sums `v` as 4 interleaved streams (4 equal parts read in lockstep, 4 independent 16-lane
/// accumulators): a single stream per core leaves memory bandwidth unused on this machine.
#[inline(always)]
fn stream_sum(v: &[f32]) -> f32 {
    let part = v.len() / 4;
    let parts: [&[f32]; 4] = std::array::from_fn(|s| &v[s * part..(s + 1) * part]);
    let mut acc = [[0f32; 16]; 4];
    for i in (0..part - part % 16).step_by(16) {
        for (a, p) in acc.iter_mut().zip(&parts) {
            for (a, x) in a.iter_mut().zip(&p[i..i + 16]) {
                *a += x;
            }
        }
    }
    let rest: f32 = parts.iter().map(|p| p[part - part % 16..].iter().sum::<f32>()).sum::<f32>() + v[4 * part..].iter().sum::<f32>();
    acc.iter().flatten().sum::<f32>() + rest
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn stream_sum_avx2(v: &[f32]) -> f32 {
    stream_sum(v)
}

fn fast_sum(v: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was detected at run time just above.
            return unsafe { stream_sum_avx2(v) };
        }
    }
    stream_sum(v)
}

/// The memory roof: read 256 MiB (8x the L3) once per iteration on the 2-thread pool, 4 MiB
/// per task.
#[divan::bench(sample_count = 20)]
fn probe_bandwidth(bencher: Bencher) {
    let be = CpuBackend::new(THREADS).expect("pool");
    let v = values(64 << 20, 1); // 256 MiB of f32
    bencher
        .counter(BytesCount::new(v.len() * 4))
        .bench_local(|| be.pool().install(|| v.par_chunks(1 << 20).map(fast_sum).sum::<f32>()));
}

/// Iterations of the FMA probe; each does 12 independent 8-wide FMAs (192 flops).
const FMA_ITERS: usize = 1 << 20;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fma_chains(seed: f32) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_set1_ps(seed); 12];
    let (a, b) = (_mm256_set1_ps(0.999_99), _mm256_set1_ps(1e-6));
    for _ in 0..FMA_ITERS {
        for v in &mut acc {
            *v = _mm256_fmadd_ps(*v, a, b);
        }
    }
    let mut out = [0f32; 8];
    let s = acc.iter().fold(_mm256_setzero_ps(), |s, v| _mm256_add_ps(s, *v));
    // SAFETY: `out` holds 8 f32.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), s) };
    out.iter().sum()
}

#[cfg(target_arch = "x86_64")]
#[divan::bench(sample_count = 20)]
fn probe_fma_peak(bencher: Bencher) {
    if !(std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")) {
        return;
    }
    let be = CpuBackend::new(THREADS).expect("pool");
    bencher.counter(ItemsCount::new(THREADS * FMA_ITERS * 12 * 8 * 2)).bench_local(|| {
        // SAFETY: AVX2 and FMA were detected above.
        be.pool().install(|| (0..THREADS).into_par_iter().map(|t| unsafe { fma_chains(t as f32) }).sum::<f32>())
    });
}
