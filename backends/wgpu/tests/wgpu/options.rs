//! What only the wgpu backend has: tables bigger than one storage binding read through row
//! windows, and RMSNorm exact with `shader-f64` (as the CPU sums in f64) or within 1e-6 in the
//! f32 fallback adapters without it run.

use finetp_backend_wgpu::{WgpuBackend, WgpuOptions};
use finetp_core::backend::{Backend, DType, Kernels};

use super::common::*;

pub fn embedding_of_a_table_larger_than_one_binding_reads_it_through_windows() {
    let be = open(WgpuOptions { max_binding_bytes: Some(4096), ..Default::default() });
    let cpu = cpu();
    let mut r = Rng::new(4);
    let (rows, h) = (301, 13); // 15.6 KB of f32: four windows of 4 KiB
    let ids: Vec<u32> = (0..64).map(|_| r.below(rows + 40) as u32).collect();
    for dt in [DType::F32, DType::BF16] {
        let table = host(&r.f32s(rows * h), &[rows, h], dt);
        let (tg, tc) = both(&be, &cpu, &table);
        let (ig, ic) = both(&be, &cpu, &host_u32(&ids, &[ids.len()]));
        let (mut yg, mut yc) = zeros_both(&be, &cpu, &[ids.len(), h], DType::F32);
        be.embedding(&ig, &tg, 20, &mut yg).unwrap();
        cpu.embedding(&ic, &tc, 20, &mut yc).unwrap();
        assert_bits(&f32s_of(&be, &yg), &cpu_f32s(&yc), &format!("split embedding {dt}: exact"));
    }
}

fn rms_case(be: &WgpuBackend, exact: bool) {
    let cpu = cpu();
    let mut r = Rng::new(5);
    for (shape, h) in [(vec![1, 576], 576), (vec![7, 3, 64], 64), (vec![5, 1001], 1001), (vec![0, 8], 8)] {
        for dt in [DType::F32, DType::BF16, DType::F16] {
            let n: usize = shape.iter().product();
            let x = host(&r.f32s(n).iter().map(|v| v * 3.0).collect::<Vec<_>>(), &shape, DType::F32);
            let w = host(&r.f32s(h), &[h], dt);
            let (xg, xc) = both(be, &cpu, &x);
            let (wg, wc) = both(be, &cpu, &w);
            let (mut yg, mut yc) = zeros_both(be, &cpu, &shape, DType::F32);
            be.rms_norm(&xg, &wg, 1e-5, &mut yg).unwrap();
            cpu.rms_norm(&xc, &wc, 1e-5, &mut yc).unwrap();
            let what = format!("rms_norm {dt} {shape:?}");
            if exact {
                assert_bits(&f32s_of(be, &yg), &cpu_f32s(&yc), &format!("{what} (f64 sum, as the CPU): exact"));
            } else {
                assert_close(&f32s_of(be, &yg), &cpu_f32s(&yc), 1e-6, &format!("{what} (f32 sum): tol 1e-6"));
            }
        }
    }
}

pub fn rms_norm_is_exact_with_shader_f64_and_close_without() {
    let be = backend();
    let exact = be.uses_shader_f64();
    if !exact {
        eprintln!("note: the adapter has no shader-f64; RMSNorm is checked within 1e-6 instead of exactly");
    }
    rms_case(&be, exact);
    // The f32 fallback is what adapters without shader-f64 run: test it here too.
    rms_case(&open(WgpuOptions { shader_f64: false, ..Default::default() }), false);
}

pub fn the_adapter_is_described_and_its_limits_taken() {
    let be = backend();
    println!("wgpu adapter: {}", be.describe());
    assert!(!be.adapter().name.is_empty(), "the adapter has a name");
    assert!(be.max_binding_bytes() >= 1 << 20, "a storage binding of at least 1 MiB");
}
