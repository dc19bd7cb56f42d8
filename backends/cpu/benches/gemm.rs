//! CPU GEMM at decode shapes next to the machine's two roofs.
//!
//! `cargo bench -p finetp-backend-cpu --bench gemm` runs the divan benches below;
//! `cargo bench -p finetp-backend-cpu --features bench-crates --bench gemm -- --table` instead
//! measures both roofs and every shape once, in that one run, and prints the markdown table of
//! `docs/perf.md` (measured vs roofline time, and the crates side by side). Words after
//! `--table` keep only the rows whose label (`f32 4096x4096 m=8`) contains one of them, and
//! `GEMM_MS=1,8,16` replaces the row counts.
//!
//! - `linear_*`: `y [m, n] = x [m, k] · w [n, k]ᵀ` on a 2-thread [`CpuBackend`]. Each call
//!   uses the next of several copies of the weight (together at least [`COLD_BYTES`], 4x the
//!   L3), so every call streams its weights from memory as a decode step through all layers
//!   does. The bytes counter is the weight bytes (`n·k·size`), read once per call, so divan's
//!   B/s is the *effective weight bandwidth*; the items counter is the flops (`2·m·n·k`).
//! - `faer_*`, `gemm_*`, `matrixmultiply_*` (feature `bench-crates`): the same f32 products
//!   through those crates, on the same cycled weights (`wᵀ` by strides, no copy), on 2 threads.
//! - `probe_bandwidth`: sum-reduce a 256 MiB f32 array on the same 2-thread pool, 4 streams
//!   per task: the memory roof (bytes/s a weight stream could get).
//! - `probe_fma_peak`: register-only FMA chains on both threads: the compute roof (flop/s).
//!
//! A GEMM call's roofline time is `max(weight bytes / bandwidth, flops / peak)`.

use std::time::Instant;

use divan::Bencher;
use divan::counter::{BytesCount, ItemsCount};
use finetp_backend_cpu::{CpuBackend, CpuStorage, CpuTensor};
use finetp_core::backend::{DType, Gemm, Tensor};
use half::bf16;
use rayon::prelude::*;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(p) = args.iter().position(|a| a == "--table") {
        let filters: Vec<&str> = args[p + 1..].iter().filter(|a| !a.starts_with("--")).map(String::as_str).collect();
        table(&filters);
    } else {
        divan::main();
    }
}

const THREADS: usize = 2;
const MS: [usize; 6] = [1, 8, 16, 32, 64, 128];
/// Bytes of distinct weight copies a bench cycles through: 4x this machine's 32 MiB L3.
const COLD_BYTES: usize = 128 << 20;
/// The `(n, k)` weight shapes: a square projection and a Llama-3-8B MLP up/gate projection.
const SHAPES: [(usize, usize); 2] = [(4096, 4096), (14336, 4096)];

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

/// One weight problem: enough copies of a `[n, k]` weight to overflow the caches, an `[m, k]`
/// input and an `[m, n]` output.
struct Case {
    be: CpuBackend,
    m: usize,
    n: usize,
    k: usize,
    ws: Vec<CpuTensor>,
    x: CpuTensor,
    y: CpuTensor,
}

impl Case {
    fn new(n: usize, k: usize, dtype: DType, m: usize) -> Self {
        let v = values(n * k, 7);
        let one = match dtype {
            DType::F32 => CpuStorage::F32(v),
            DType::BF16 => CpuStorage::BF16(v.iter().map(|&x| bf16::from_f32(x)).collect()),
            other => unreachable!("bench weights are f32 or bf16, not {other}"),
        };
        let w: CpuTensor = Tensor::from_parts(one, vec![n, k], dtype);
        let copies = COLD_BYTES.div_ceil(w.size_in_bytes()).clamp(1, 64);
        let ws = (0..copies).map(|_| Tensor::from_parts(w.buffer().clone(), vec![n, k], dtype)).collect();
        Case {
            be: CpuBackend::new(THREADS).expect("pool"),
            m,
            n,
            k,
            ws,
            x: Tensor::from_parts(CpuStorage::F32(values(m * k, 3)), vec![m, k], DType::F32),
            y: Tensor::from_parts(CpuStorage::F32(vec![0.0; m * n]), vec![m, n], DType::F32),
        }
    }

    fn weight_bytes(&self) -> usize {
        self.ws[0].size_in_bytes()
    }

    fn flops(&self) -> usize {
        2 * self.m * self.n * self.k
    }

    /// One product with weight copy `i % copies`.
    fn run(&mut self, imp: Impl, i: usize) {
        let w = &self.ws[i % self.ws.len()];
        match imp {
            Impl::Finetp => self.be.linear(&self.x, w, None, &mut self.y).expect("linear"),
            #[cfg(feature = "bench-crates")]
            _ => {
                let (m, n, k) = (self.m, self.n, self.k);
                let (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(y)) = (self.x.buffer(), w.buffer(), self.y.buffer_mut()) else {
                    unreachable!("the crates run f32 weights only")
                };
                crates::run(&self.be, imp, x, w, y, m, n, k);
            }
        }
    }

    fn output(&self) -> &[f32] {
        match self.y.buffer() {
            CpuStorage::F32(y) => y,
            _ => unreachable!("y is f32"),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Impl {
    Finetp,
    #[cfg(feature = "bench-crates")]
    Faer,
    #[cfg(feature = "bench-crates")]
    GemmCrate,
    #[cfg(feature = "bench-crates")]
    MatrixMultiply,
}

#[cfg(feature = "bench-crates")]
mod crates {
    use finetp_backend_cpu::CpuBackend;

    use super::{Impl, THREADS};

    /// `y [m, n] = x [m, k] · w [n, k]ᵀ` through a crate, in `be`'s pool (faer and gemm
    /// split over the current rayon pool; matrixmultiply uses its own, sized by
    /// `MATMUL_NUM_THREADS`, which `table` sets to 2).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn run(be: &CpuBackend, imp: Impl, x: &[f32], w: &[f32], y: &mut [f32], m: usize, n: usize, k: usize) {
        let (sk, sn) = (k as isize, n as isize);
        match imp {
            Impl::Finetp => unreachable!(),
            Impl::Faer => be.pool().install(|| {
                use faer::{Accum, MatMut, MatRef, Par};
                let lhs = MatRef::from_row_major_slice(x, m, k);
                let rhs = MatRef::from_row_major_slice(w, n, k).transpose();
                let dst = MatMut::from_row_major_slice_mut(y, m, n);
                faer::linalg::matmul::matmul(dst, Accum::Replace, lhs, rhs, 1.0, Par::rayon(THREADS));
            }),
            // SAFETY: the pointers cover `x [m, k]`, `w [n, k]` and `y [m, n]` with these strides
            // (checked by the slice lengths asserted here); `y` is not read (`read_dst = false`).
            Impl::GemmCrate => be.pool().install(|| unsafe {
                assert!(x.len() == m * k && w.len() == n * k && y.len() == m * n);
                // gemm: dst = alpha·dst + beta·lhs·rhs; args (m, n, k, dst, cs, rs, read_dst,
                // lhs, cs, rs, rhs, cs, rs, alpha, beta, conj…, parallelism).
                gemm::gemm(
                    m,
                    n,
                    k,
                    y.as_mut_ptr(),
                    1,
                    sn,
                    false,
                    x.as_ptr(),
                    1,
                    sk,
                    w.as_ptr(),
                    sk,
                    1,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::Rayon(THREADS),
                )
            }),
            // SAFETY: as above: `a = x` (row stride k), `b = wᵀ` (row stride 1, column stride k),
            // `c = y` (row stride n), all within the asserted lengths; beta = 0 does not read `c`.
            Impl::MatrixMultiply => unsafe {
                assert!(x.len() == m * k && w.len() == n * k && y.len() == m * n);
                matrixmultiply::sgemm(m, k, n, 1.0, x.as_ptr(), sk, 1, w.as_ptr(), 1, sk, 0.0, y.as_mut_ptr(), sn, 1)
            },
        }
    }
}

fn bench_case(bencher: Bencher, n: usize, k: usize, dtype: DType, m: usize, imp: Impl) {
    let mut case = Case::new(n, k, dtype, m);
    let mut i = 0;
    bencher.counter(BytesCount::new(case.weight_bytes())).counter(ItemsCount::new(case.flops())).bench_local(|| {
        i += 1;
        case.run(imp, i);
    });
}

#[divan::bench(args = MS, sample_count = 20)]
fn linear_f32_4096x4096(bencher: Bencher, m: usize) {
    bench_case(bencher, 4096, 4096, DType::F32, m, Impl::Finetp);
}

#[divan::bench(args = MS, sample_count = 20)]
fn linear_bf16_4096x4096(bencher: Bencher, m: usize) {
    bench_case(bencher, 4096, 4096, DType::BF16, m, Impl::Finetp);
}

#[divan::bench(args = MS, sample_count = 10)]
fn linear_f32_14336x4096(bencher: Bencher, m: usize) {
    bench_case(bencher, 14336, 4096, DType::F32, m, Impl::Finetp);
}

#[divan::bench(args = MS, sample_count = 10)]
fn linear_bf16_14336x4096(bencher: Bencher, m: usize) {
    bench_case(bencher, 14336, 4096, DType::BF16, m, Impl::Finetp);
}

#[cfg(feature = "bench-crates")]
#[divan::bench(args = MS, sample_count = 10)]
fn faer_f32_4096x4096(bencher: Bencher, m: usize) {
    bench_case(bencher, 4096, 4096, DType::F32, m, Impl::Faer);
}

#[cfg(feature = "bench-crates")]
#[divan::bench(args = MS, sample_count = 10)]
fn gemm_f32_4096x4096(bencher: Bencher, m: usize) {
    bench_case(bencher, 4096, 4096, DType::F32, m, Impl::GemmCrate);
}

#[cfg(feature = "bench-crates")]
#[divan::bench(args = MS, sample_count = 10)]
fn matrixmultiply_f32_4096x4096(bencher: Bencher, m: usize) {
    set_matmul_threads();
    bench_case(bencher, 4096, 4096, DType::F32, m, Impl::MatrixMultiply);
}

/// matrixmultiply sizes its pool from `MATMUL_NUM_THREADS` on first use (default: physical
/// cores); pin it to the rank's 2 threads unless the caller chose.
#[cfg(feature = "bench-crates")]
fn set_matmul_threads() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("MATMUL_NUM_THREADS").is_none() {
            // SAFETY: called before matrixmultiply's first use; nothing else in this bench
            // reads or writes the environment concurrently.
            unsafe { std::env::set_var("MATMUL_NUM_THREADS", THREADS.to_string()) };
        }
    });
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

/// 256 MiB of f32: 8x the L3.
fn probe_array() -> Vec<f32> {
    values(64 << 20, 1)
}

/// One pass of the memory probe: read `v` once on the pool, 4 MiB per task.
fn bandwidth_pass(be: &CpuBackend, v: &[f32]) -> f32 {
    be.pool().install(|| v.par_chunks(1 << 20).map(fast_sum).sum::<f32>())
}

/// The memory roof: read 256 MiB (8x the L3) once per iteration on the 2-thread pool.
#[divan::bench(sample_count = 20)]
fn probe_bandwidth(bencher: Bencher) {
    let be = CpuBackend::new(THREADS).expect("pool");
    let v = probe_array();
    bencher.counter(BytesCount::new(v.len() * 4)).bench_local(|| bandwidth_pass(&be, &v));
}

/// Iterations of the FMA probe; each does 12 independent 8-wide FMAs (192 flops).
const FMA_ITERS: usize = 1 << 20;
const FMA_FLOPS: usize = THREADS * FMA_ITERS * 12 * 8 * 2;

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

/// One pass of the FMA probe on every thread of the pool (`FMA_FLOPS` flops).
#[cfg(target_arch = "x86_64")]
fn fma_pass(be: &CpuBackend) -> f32 {
    assert!(std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"));
    // SAFETY: AVX2 and FMA were detected just above.
    be.pool().install(|| (0..THREADS).into_par_iter().map(|t| unsafe { fma_chains(t as f32) }).sum::<f32>())
}

#[cfg(target_arch = "x86_64")]
#[divan::bench(sample_count = 20)]
fn probe_fma_peak(bencher: Bencher) {
    let be = CpuBackend::new(THREADS).expect("pool");
    bencher.counter(ItemsCount::new(FMA_FLOPS)).bench_local(|| fma_pass(&be));
}

/// (median, fastest) seconds of `f(i)` for i = 2, 3, … after two warm-up calls: at least
/// `min_calls` calls and 0.5 s (at most 400 calls).
fn timings(min_calls: usize, mut f: impl FnMut(usize)) -> (f64, f64) {
    f(0);
    f(1);
    let start = Instant::now();
    let mut ts = Vec::new();
    while ts.len() < min_calls || (start.elapsed().as_secs_f64() < 0.5 && ts.len() < 400) {
        let t0 = Instant::now();
        f(ts.len() + 2);
        ts.push(t0.elapsed().as_secs_f64());
    }
    ts.sort_by(f64::total_cmp);
    (ts[ts.len() / 2], ts[0])
}

/// The roofs, each the median of several passes: (bytes/s, flop/s).
fn roofs(be: &CpuBackend, v: &[f32]) -> (f64, f64) {
    let bw = (v.len() * 4) as f64 / timings(9, |_| _ = std::hint::black_box(bandwidth_pass(be, v))).0;
    #[cfg(target_arch = "x86_64")]
    let peak = FMA_FLOPS as f64 / timings(9, |_| _ = std::hint::black_box(fma_pass(be))).0;
    #[cfg(not(target_arch = "x86_64"))]
    let peak = f64::INFINITY;
    (bw, peak)
}

/// One row of the table.
struct Row {
    dtype: DType,
    n: usize,
    k: usize,
    m: usize,
    bytes: usize,
    flops: usize,
    /// finetp: median and fastest seconds.
    median: f64,
    fastest: f64,
    /// The roofs probed just before and just after finetp's calls, the higher of each.
    bw: f64,
    peak: f64,
    /// The crates: (median seconds, largest difference from finetp's output / max |y|).
    crates: Vec<(f64, f32)>,
}

/// The `--table` run: every shape once, each with both roofs probed right before and right
/// after its finetp calls (the machine's memory bandwidth drifts by tens of percent within
/// minutes; the higher probe of each pair is used, so the roofline is the stricter one), then
/// printed as markdown.
fn table(filters: &[&str]) {
    #[cfg(feature = "bench-crates")]
    set_matmul_threads();
    let be = CpuBackend::new(THREADS).expect("pool");
    let probe = probe_array();
    #[cfg(feature = "bench-crates")]
    let crates = [Impl::Faer, Impl::GemmCrate, Impl::MatrixMultiply];
    #[cfg(not(feature = "bench-crates"))]
    let crates: [Impl; 0] = [];
    let mut rows = Vec::new();
    // `GEMM_MS=1,8,16` replaces the row counts (for exploring; the documented table uses MS).
    let ms: Vec<usize> = std::env::var("GEMM_MS").map_or(MS.to_vec(), |v| v.split(',').map(|m| m.trim().parse().expect("GEMM_MS: numbers")).collect());
    for (n, k) in SHAPES {
        for dtype in [DType::F32, DType::BF16] {
            for &m in &ms {
                let label = format!("{dtype} {n}x{k} m={m}");
                if !filters.is_empty() && !filters.iter().any(|f| label.contains(f)) {
                    continue;
                }
                let mut case = Case::new(n, k, dtype, m);
                let calls = if case.flops() > 4 << 30 { 5 } else { 10 };
                let (bw0, peak0) = roofs(&be, &probe);
                let (median, fastest) = timings(calls, |i| case.run(Impl::Finetp, i));
                let (bw1, peak1) = roofs(&be, &probe);
                let mut others = Vec::new();
                if dtype == DType::F32 {
                    case.run(Impl::Finetp, 0);
                    let want = case.output().to_vec();
                    let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
                    for imp in crates {
                        let s = timings(calls, |i| case.run(imp, i)).0;
                        case.run(imp, 0);
                        let diff = case.output().iter().zip(&want).fold(0f32, |a, (g, w)| a.max((g - w).abs())) / scale;
                        others.push((s, diff));
                    }
                }
                eprintln!("{label}: {:.2} ms (probes {:.1}/{:.1} GB/s, {:.0}/{:.0} GFLOP/s)", median * 1e3, bw0 / 1e9, bw1 / 1e9, peak0 / 1e9, peak1 / 1e9);
                let (bytes, flops) = (case.weight_bytes(), case.flops());
                rows.push(Row { dtype, n, k, m, bytes, flops, median, fastest, bw: bw0.max(bw1), peak: peak0.max(peak1), crates: others });
            }
        }
    }
    let range = |f: fn(&Row) -> f64| rows.iter().map(f).fold((f64::INFINITY, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let ((bwl, bwh), (pl, ph)) = (range(|r| r.bw), range(|r| r.peak));
    println!(
        "{THREADS} threads. Memory probe {:.1}–{:.1} GB/s, FMA probe {:.0}–{:.0} GFLOP/s over the run (each row uses the probes taken around it).\n",
        bwl / 1e9,
        bwh / 1e9,
        pl / 1e9,
        ph / 1e9
    );
    let crate_cols = if crates.is_empty() { "" } else { " faer | gemm | matrixmultiply |" };
    println!("| weight n×k | dtype | m | finetp ms | fastest ms | roofline ms | ratio | GFLOP/s | weight GB/s | probe GB/s |{crate_cols}");
    println!("|---|---|---|---|---|---|---|---|---|---|{}", "---|".repeat(crates.len()));
    let mut worst_diff = 0f32;
    for r in &rows {
        let (mem, comp) = (r.bytes as f64 / r.bw, r.flops as f64 / r.peak);
        let roof = mem.max(comp);
        let bound = if mem >= comp { "mem" } else { "fma" };
        let mut line = format!(
            "| {}×{} | {} | {} | {:.2} | {:.2} | {:.2} ({bound}) | {:.2} | {:.0} | {:.1} | {:.1} |",
            r.n,
            r.k,
            r.dtype,
            r.m,
            r.median * 1e3,
            r.fastest * 1e3,
            roof * 1e3,
            r.median / roof,
            r.flops as f64 / r.median / 1e9,
            r.bytes as f64 / r.median / 1e9,
            r.bw / 1e9
        );
        for (c, d) in &r.crates {
            line += &format!(" {:.2} ({:.2}) |", c * 1e3, c / roof);
            worst_diff = worst_diff.max(*d);
        }
        if r.crates.is_empty() && !crates.is_empty() {
            line += &" – |".repeat(crates.len());
        }
        println!("{line}");
    }
    if !crates.is_empty() {
        println!("\nCrate columns: median ms (ratio to the roofline). Largest difference from finetp's output: {worst_diff:.1e} of max |y|.");
    }
}
