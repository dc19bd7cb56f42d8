mod common;
use common::*;
use finetp_core::backend::{Backend, DType, Gemm, Kernels, RopeStyle};

#[test]
fn smoke() {
    let Some(be) = backend() else { return };
    eprintln!("{}", be.describe());
    let cpu = cpu();
    let mut r = Rng::new(1);
    for &(m, n, k) in &[(1usize, 64usize, 576usize), (7, 33, 1500), (40, 100, 2049)] {
        for dt in [DType::F32, DType::BF16, DType::F16] {
            let x = host(&r.f32s(m * k), &[m, k], DType::F32);
            let w = host(&r.f32s(n * k), &[n, k], dt);
            let (xg, xc) = both(&be, &cpu, &x);
            let (wg, wc) = both(&be, &cpu, &w);
            let (mut yg, mut yc) = zeros_both(&be, &cpu, &[m, n], DType::F32);
            be.linear(&xg, &wg, None, &mut yg).unwrap();
            cpu.linear(&xc, &wc, None, &mut yc).unwrap();
            let (g, c) = (f32s_of(&be, &yg), cpu_f32s(&yc));
            eprintln!("linear {m}x{n}x{k} {dt}: {:?}", diff_stats(&g, &c));
        }
    }
    // rms norm
    let x = host(&r.f32s(5 * 576), &[5, 576], DType::F32);
    let w = host(&r.f32s(576), &[576], DType::F32);
    let (xg, xc) = both(&be, &cpu, &x);
    let (wg, wc) = both(&be, &cpu, &w);
    let (mut yg, mut yc) = zeros_both(&be, &cpu, &[5, 576], DType::F32);
    be.rms_norm(&xg, &wg, 1e-5, &mut yg).unwrap();
    cpu.rms_norm(&xc, &wc, 1e-5, &mut yc).unwrap();
    eprintln!("rms: {:?}", diff_stats(&f32s_of(&be, &yg), &cpu_f32s(&yc)));
    // rope
    let (t, nh, d) = (6, 3, 64);
    let x = host(&r.f32s(t * nh * d), &[t, nh, d], DType::F32);
    let pos = host_u32(&[0, 1, 5, 17, 100, 2000], &[t]);
    let inv: Vec<f32> = (0..d / 2).map(|i| 1.0 / 10000f32.powf(2.0 * i as f32 / d as f32)).collect();
    let invf = host(&inv, &[d / 2], DType::F32);
    let (mut xg, mut xc) = both(&be, &cpu, &x);
    let (pg, pc) = both(&be, &cpu, &pos);
    let (ig, ic) = both(&be, &cpu, &invf);
    be.rope(&mut xg, &pg, &ig, RopeStyle::Neox).unwrap();
    cpu.rope(&mut xc, &pc, &ic, RopeStyle::Neox).unwrap();
    eprintln!("rope: {:?}", diff_stats(&f32s_of(&be, &xg), &cpu_f32s(&xc)));
    // silu
    let gu = host(&r.f32s(4 * 2 * 300).iter().map(|v| v * 8.0).collect::<Vec<_>>(), &[4, 600], DType::F32);
    let (gg, gc) = both(&be, &cpu, &gu);
    let (mut yg, mut yc) = zeros_both(&be, &cpu, &[4, 300], DType::F32);
    be.silu_mul(&gg, &mut yg).unwrap();
    cpu.silu_mul(&gc, &mut yc).unwrap();
    eprintln!("silu: {:?}", diff_stats(&f32s_of(&be, &yg), &cpu_f32s(&yc)));
}
