//! GEMM on wgpu against the CPU backend and an f64 reference, on random inputs, and its
//! reduction order pinned bit for bit (beyond the suite's tolerance).
//!
//! Tolerances (stated again in each assert message):
//! - accuracy: `|y - ref| <= 1e-5 · Σ|x·w|` against an f64 reference computed from the weights
//!   as stored (16-bit weights rounded), the CPU backend's own test bound;
//! - the reduction order is pinned exactly: every output equals, bit for bit, the CPU
//!   kernel's order (8 lanes per 1024-wide block, its lane tree, the tail in order) evaluated
//!   with the driver's WGSL `fma` as probed at startup (`WgpuBackend::fma_is_fused`): fused
//!   multiply-adds where the driver fuses (GPUs; the wgpu GEMM is then bit-identical to the
//!   CPU backend's), separately rounded multiplies and adds where it splits them (lavapipe:
//!   Mesa lowers WGSL `fma` to a multiply and an add);
//! - split weights (forced small binding limit) and both f16 paths give exactly the unsplit /
//!   native result.

use finetp_backend_wgpu::{WgpuBackend, WgpuOptions};
use finetp_core::backend::{DType, Gemm, HostTensor};

use super::common::*;

/// The CPU kernel's reduction order for one output (backends/cpu/src/gemm/tile.rs), with fused
/// (`mul_add`) or separately rounded multiply-adds; `paired`: bf16 weights, whose lanes take
/// elements `2l` and `2l + 1` of each step of 16.
fn cpu_order(x: &[f32], w: &[f32], fused: bool, paired: bool) -> f32 {
    let f = |a: f32, b: f32, c: f32| if fused { a.mul_add(b, c) } else { a * b + c };
    let k = x.len();
    let mut total = 0f32;
    for b0 in (0..k).step_by(512) {
        let b1 = (b0 + 512).min(k);
        let mut acc = [0f32; 8];
        for o in (b0..b1).step_by(16) {
            for h in 0..2 {
                for (l, a) in acc.iter_mut().enumerate() {
                    let i = o + if paired { 2 * l + h } else { 8 * h + l };
                    let (xv, wv) = if i < b1 { (x[i], w[i]) } else { (0.0, 0.0) };
                    *a = f(xv, wv, *a);
                }
            }
        }
        let h: [f32; 4] = std::array::from_fn(|l| acc[l] + acc[l + 4]);
        total += (h[0] + h[1]) + (h[2] + h[3]);
    }
    total
}

/// The stored weights widened to f32 (what the kernels multiply).
fn stored(h: &HostTensor) -> Vec<f32> {
    h.to_f32_vec().expect("float weights")
}

/// `y = x·wᵀ (+ bias)` on wgpu, checked three ways; returns the output.
#[allow(clippy::too_many_arguments)]
fn check(be: &WgpuBackend, m: usize, n: usize, k: usize, dt: DType, with_bias: bool, seed: u64) -> Vec<f32> {
    let cpu = cpu();
    let mut r = Rng::new(seed);
    let xh = host(&r.f32s(m * k), &[m, k], DType::F32);
    let wh = host(&r.f32s(n * k), &[n, k], dt);
    let bh = host(&r.f32s(n), &[n], DType::F32);
    let (xg, xc) = both(be, &cpu, &xh);
    let (wg, wc) = both(be, &cpu, &wh);
    let (bg, bc) = both(be, &cpu, &bh);
    let (mut yg, mut yc) = zeros_both(be, &cpu, &[m, n], DType::F32);
    be.linear(&xg, &wg, with_bias.then_some(&bg), &mut yg).unwrap();
    cpu.linear(&xc, &wc, with_bias.then_some(&bc), &mut yc).unwrap();
    let (got, want_cpu) = (f32s_of(be, &yg), cpu_f32s(&yc));
    let (x, w, b) = (stored(&xh), stored(&wh), stored(&bh));
    let what = format!("linear m {m} n {n} k {k} {dt} bias {with_bias}");
    for i in 0..m {
        for j in 0..n {
            let (xr, wr) = (&x[i * k..(i + 1) * k], &w[j * k..(j + 1) * k]);
            let exact: f64 = xr.iter().zip(wr).map(|(a, c)| f64::from(*a) * f64::from(*c)).sum::<f64>() + if with_bias { f64::from(b[j]) } else { 0.0 };
            let mag: f64 = xr.iter().zip(wr).map(|(a, c)| (f64::from(*a) * f64::from(*c)).abs()).sum::<f64>() + f64::from(b[j].abs());
            let g = got[i * n + j];
            assert!((f64::from(g) - exact).abs() <= 1e-5 * mag.max(f64::MIN_POSITIVE), "{what} [{i},{j}]: {g} vs f64 {exact}: tol 1e-5 · Σ|x·w|");
            let bias = |v: f32| if with_bias { v + b[j] } else { v };
            let paired = dt == DType::BF16;
            let (fused, split) = (bias(cpu_order(xr, wr, true, paired)), bias(cpu_order(xr, wr, false, paired)));
            let want = if be.fma_is_fused() { fused } else { split };
            assert_eq!(g.to_bits(), want.to_bits(), "{what} [{i},{j}]: {g} vs the CPU order with {} multiply-adds ({want}): exact", if be.fma_is_fused() { "fused" } else { "split" });
            assert_eq!(want_cpu[i * n + j].to_bits(), fused.to_bits(), "{what} [{i},{j}]: the CPU backend is its own order with FMA (test bug otherwise)");
        }
    }
    got
}

pub fn linear_matches_for_every_weight_dtype_bias_and_shape() {
    let be = backend();
    // m = 0, 1, odd, a multiple of the 4 rows per invocation and not; k below 8, odd, not a
    // multiple of 4 (scalar loads), past one 1024-wide block with a tail; n odd, wider than a
    // workgroup.
    let shapes = [(0, 5, 16), (1, 64, 576), (1, 7, 3), (3, 33, 13), (4, 65, 1001), (7, 130, 1027), (9, 17, 2056), (40, 96, 576)];
    let mut seed = 10;
    for (m, n, k) in shapes {
        for dt in [DType::F32, DType::BF16, DType::F16] {
            for bias in [false, true] {
                seed += 1;
                check(&be, m, n, k, dt, bias, seed);
            }
        }
    }
}

pub fn f16_weights_give_the_same_bits_with_and_without_shader_f16() {
    let native = backend();
    let packed = open(WgpuOptions { shader_f16: false, ..Default::default() });
    assert!(!packed.uses_shader_f16());
    if !native.uses_shader_f16() {
        eprintln!("note: the adapter has no shader-f16; both runs use unpack2x16float");
    }
    for (m, n, k) in [(1, 40, 576), (5, 9, 1001)] {
        let a = check(&native, m, n, k, DType::F16, true, 77);
        let b = check(&packed, m, n, k, DType::F16, true, 77);
        assert_bits(&a, &b, &format!("f16 {m}x{n}x{k}: native f16 loads vs unpack2x16float: exact"));
    }
}

pub fn weights_larger_than_one_binding_are_split_into_row_windows() {
    let full = backend();
    // 8 KiB bindings: a 300 x 257 f32 weight (308 KB) is read through 38+ windows, whose
    // starts are not row-aligned to the binding alignment.
    let small = open(WgpuOptions { max_binding_bytes: Some(8192), ..Default::default() });
    assert_eq!(small.max_binding_bytes(), 8192);
    for dt in [DType::F32, DType::BF16, DType::F16] {
        for (m, n, k) in [(1, 300, 257), (6, 301, 128)] {
            let a = check(&full, m, n, k, dt, true, 5);
            let b = check(&small, m, n, k, dt, true, 5);
            assert_bits(&b, &a, &format!("split {dt} {m}x{n}x{k}: windows give exactly the unsplit result"));
        }
    }
}
