//! Per-row and element-wise kernels: embedding (exact), RMSNorm, RoPE, SiLU·mul (within their
//! tolerances), add (exact).

use finetp_core::backend::{DType, Device, Kernels, RopeStyle, RopeTable};

use super::data::{fail, host, host_u32};
use super::{Case, Env};
use crate::Rng;
use crate::tolerance::{Op, close};

pub(super) fn cases<B: Device>() -> Vec<Case<B>> {
    vec![
        Case::new("rows_embedding_gathers_exactly_with_shard_masking", &["Kernels::embedding"], embedding::<B>),
        Case::new("rows_rms_norm_equals_the_cpu", &["Kernels::rms_norm"], rms_norm::<B>),
        Case::new("rows_rope_equals_the_cpu_for_both_styles_partial_rotation_and_a_factor", &["Kernels::rope"], rope::<B>),
        Case::new("rows_silu_mul_and_add_equal_the_cpu", &["Kernels::silu_mul", "Kernels::add_assign"], silu_add::<B>),
    ]
}

fn embedding<B: Device>(env: &Env<B>) -> Result<(), String> {
    let p = env.pair();
    let mut r = Rng::new(3);
    let (rows, h) = (37, 19);
    let ids: Vec<u32> = (0..23).map(|_| r.below(100) as u32).chain([0, 29, 30, 66, 67, u32::MAX]).collect();
    for dt in [DType::F32, DType::BF16, DType::F16] {
        let (tg, tc) = p.both(&host(&r.f32s(rows * h), &[rows, h], dt))?;
        let (ig, ic) = p.both(&host_u32(&ids, &[ids.len()]))?;
        for row_start in [0, 30, 1 << 20] {
            let what = format!("embedding of a {dt} table, row_start {row_start}");
            let (mut yg, mut yc) = p.zeros(&[ids.len(), h])?;
            p.be.embedding(&ig, &tg, row_start, &mut yg).map_err(fail(&what))?;
            p.cpu.embedding(&ic, &tc, row_start, &mut yc).map_err(fail(&what))?;
            let (g, c) = p.f32s(&yg, &yc)?;
            // Exact in f32; a 16-bit activation dtype stores the (16-bit) table rows as they are
            // only when the table has that dtype, so compare within its rounding.
            let tol = if p.act() == DType::F32 || p.act() == dt { 0.0 } else { Op::RmsNorm.tol(p.act()) };
            close(&g, &c, tol, &what)?;
        }
    }
    Ok(())
}

fn rms_norm<B: Device>(env: &Env<B>) -> Result<(), String> {
    let p = env.pair();
    let tol = Op::RmsNorm.tol(p.act());
    let mut r = Rng::new(5);
    for (shape, h) in [(vec![1, 576], 576), (vec![7, 3, 64], 64), (vec![5, 1001], 1001), (vec![0, 8], 8)] {
        for dt in [DType::F32, DType::BF16, DType::F16] {
            let what = format!("rms_norm {shape:?} with {dt} weights");
            let n: usize = shape.iter().product();
            let x: Vec<f32> = r.f32s(n).iter().map(|v| v * 3.0).collect();
            let (xg, xc) = p.acts(&x, &shape)?;
            let (wg, wc) = p.both(&host(&r.f32s(h), &[h], dt))?;
            let (mut yg, mut yc) = p.zeros(&shape)?;
            p.be.rms_norm(&xg, &wg, 1e-5, &mut yg).map_err(fail(&what))?;
            p.cpu.rms_norm(&xc, &wc, 1e-5, &mut yc).map_err(fail(&what))?;
            let (g, c) = p.f32s(&yg, &yc)?;
            close(&g, &c, tol, &what)?;
        }
    }
    Ok(())
}

fn rope<B: Device>(env: &Env<B>) -> Result<(), String> {
    let p = env.pair();
    let tol = Op::Rope.tol(p.act());
    let mut r = Rng::new(6);
    for (t, nh, d, half) in [(6, 3, 64, 32), (5, 2, 10, 2), (1, 9, 64, 32), (0, 2, 8, 4)] {
        let positions: Vec<u32> = (0..t as u32).map(|i| [0, 1, 7, 100, 513, 4095][i as usize % 6]).collect();
        let inv: Vec<f32> = (0..half).map(|i| 1.0 / 10000f32.powf(2.0 * i as f32 / (2 * half) as f32)).collect();
        for style in [RopeStyle::Neox, RopeStyle::Interleaved] {
            for factor in [1.0, 1.2] {
                let what = format!("rope {style:?} [{t},{nh},{d}] rotary {} factor {factor}", 2 * half);
                let x = r.f32s(t * nh * d);
                let (mut xg, mut xc) = p.acts(&x, &[t, nh, d])?;
                let (pg, pc) = p.both(&host_u32(&positions, &[t]))?;
                let (fg, fc) = p.both(&host(&inv, &[half], DType::F32))?;
                let (tg, tc) = (RopeTable { inv_freq: fg, style, attention_factor: factor }, RopeTable { inv_freq: fc, style, attention_factor: factor });
                p.be.rope(&mut xg, &pg, &tg).map_err(fail(&what))?;
                p.cpu.rope(&mut xc, &pc, &tc).map_err(fail(&what))?;
                let (g, c) = p.f32s(&xg, &xc)?;
                close(&g, &c, tol, &what)?;
            }
        }
    }
    Ok(())
}

fn silu_add<B: Device>(env: &Env<B>) -> Result<(), String> {
    let p = env.pair();
    let mut r = Rng::new(7);
    for (t, i) in [(1, 1536), (9, 77), (0, 5)] {
        let what = format!("silu_mul [{t}, 2x{i}]");
        let gu: Vec<f32> = r.f32s(t * 2 * i).iter().map(|v| v * 12.0).collect();
        let (gg, gc) = p.acts(&gu, &[t, 2 * i])?;
        let (mut yg, mut yc) = p.zeros(&[t, i])?;
        p.be.silu_mul(&gg, &mut yg).map_err(fail(&what))?;
        p.cpu.silu_mul(&gc, &mut yc).map_err(fail(&what))?;
        let (g, c) = p.f32s(&yg, &yc)?;
        close(&g, &c, Op::SiluMul.tol(p.act()), &what)?;

        let what = format!("add_assign [{t},{i}]");
        let (mut ag, mut ac) = p.acts(&r.f32s(t * i), &[t, i])?;
        let (bg, bc) = p.acts(&r.f32s(t * i), &[t, i])?;
        p.be.add_assign(&mut ag, &bg).map_err(fail(&what))?;
        p.cpu.add_assign(&mut ac, &bc).map_err(fail(&what))?;
        let (g, c) = p.f32s(&ag, &ac)?;
        // One rounded add: exact in f32, the activation dtype's rounding otherwise.
        let tol = if p.act() == DType::F32 { 0.0 } else { Op::RmsNorm.tol(p.act()) };
        close(&g, &c, tol, &what)?;
    }
    Ok(())
}
