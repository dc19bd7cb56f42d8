//! Token sampling and MoE routing on the device: the same choices as the CPU (ids exact,
//! routing weights within [`Op::SiluMul`]), with ties, NaN, top-k / top-p cut-offs and every
//! routing method.

use finetp_core::backend::{DType, Device, Kernels, MoeRouting, SampleParams};
use finetp_core::config::{MoeScoring, TopkMethod};

use super::data::{fail, host, u32s};
use super::{Case, Env, ensure};
use crate::Rng;
use crate::tolerance::{Op, close};

pub(super) fn cases<B: Device>() -> Vec<Case<B>> {
    vec![
        Case::new("sample_picks_the_cpus_tokens_greedy_and_random", &["Kernels::sample"], sample::<B>),
        Case::new("moe_route_picks_the_cpus_experts_for_every_method", &["Kernels::moe_route"], route::<B>),
    ]
}

fn sample<B: Device>(env: &Env<B>) -> Result<(), String> {
    let p = env.pair();
    let mut r = Rng::new(9);
    for (m, v) in [(1, 49152 / 2), (3, 1000), (6, 1025), (2, 1), (0, 7)] {
        // Well-separated logits (steps of 1/8 apart, shuffled), so that a backend whose
        // activations are 16-bit still orders them as the CPU does.
        let mut x: Vec<f32> = (0..m * v).map(|i| ((i * 7919) % v) as f32 / 8.0 - 20.0).collect();
        if m >= 3 {
            // Ties (the first wins), a NaN (never picked over a number), in sampled rows ...
            x[v + 10] = 500.0;
            x[v + 900] = 500.0;
            x[2 * v + 3] = f32::NAN;
            x[2 * v + 4] = 700.0;
        }
        if m >= 4 {
            // ... and in greedy rows (0 and 3).
            x[3 * v + 10] = 500.0;
            x[3 * v + 900] = 500.0;
            x[5] = f32::NAN;
            x[6] = 600.0;
        }
        let rows: Vec<SampleParams> = (0..m)
            .map(|i| match i % 3 {
                0 => SampleParams::GREEDY,
                1 => SampleParams { temperature: 0.8, top_p: 0.9, top_k: 0, uniform: r.f32().abs() },
                _ => SampleParams { temperature: 1.5, top_p: 1.0, top_k: 5, uniform: r.f32().abs() },
            })
            .collect();
        let what = format!("sample [{m},{v}]");
        let (lg, lc) = p.acts(&x, &[m, v])?;
        let (pg, pc) = p.both(&SampleParams::tensor(&rows))?;
        let (mut ig, mut ic) = p.zeros_of(&[m], DType::U32)?;
        p.be.sample(&lg, &pg, &mut ig).map_err(fail(&what))?;
        p.cpu.sample(&lc, &pc, &mut ic).map_err(fail(&what))?;
        let (g, c) = (u32s(p.be, &ig)?, u32s(p.cpu, &ic)?);
        ensure(g == c, || format!("{what}: ids {g:?}, the CPU picked {c:?}"))?;
    }
    edges(&p)?;
    let bad = p.be.upload(&host(&[], &[2, 0], p.act())).map_err(fail("upload"))?;
    let params = p.be.upload(&SampleParams::tensor(&[SampleParams::GREEDY; 2])).map_err(fail("upload"))?;
    let mut ids = p.be.zeros(&[2], DType::U32).map_err(fail("zeros"))?;
    ensure(p.be.sample(&bad, &params, &mut ids).is_err(), || "rows of zero logits were accepted".into())
}

/// The rule's edges, one row each: a zero draw, `top_p` 0, `top_k` 1, a draw just under 1, a
/// row of -inf (every weight NaN), two +inf logits (they share the weight), a temperature so
/// small every weight but the top one underflows.
fn edges<B: Device>(p: &super::Pair<'_, B>) -> Result<(), String> {
    let v = 300;
    let base: Vec<f32> = (0..v).map(|i| ((i * 7919) % v) as f32 / 16.0 - 5.0).collect();
    let t = |temperature, top_p, top_k, uniform| SampleParams { temperature, top_p, top_k, uniform };
    let rows = [
        (base.clone(), t(1.0, 1.0, 0, 0.0)),
        (base.clone(), t(1.0, 0.0, 0, 0.5)),
        (base.clone(), t(0.7, 1.0, 1, 0.99)),
        (base.clone(), t(1.0, 1.0, 0, 0.999_999)),
        (vec![f32::NEG_INFINITY; v], t(1.0, 1.0, 0, 0.3)),
        ({ let mut x = base.clone(); x[7] = f32::INFINITY; x[200] = f32::INFINITY; x }, t(1.0, 1.0, 0, 0.7)),
        (base.clone(), t(1e-3, 0.95, 40, 0.5)),
    ];
    let x: Vec<f32> = rows.iter().flat_map(|r| r.0.iter().copied()).collect();
    let params: Vec<SampleParams> = rows.iter().map(|r| r.1).collect();
    let m = rows.len();
    let what = format!("sample edges [{m},{v}]");
    let (lg, lc) = p.acts(&x, &[m, v])?;
    let (pg, pc) = p.both(&SampleParams::tensor(&params))?;
    let (mut ig, mut ic) = p.zeros_of(&[m], DType::U32)?;
    p.be.sample(&lg, &pg, &mut ig).map_err(fail(&what))?;
    p.cpu.sample(&lc, &pc, &mut ic).map_err(fail(&what))?;
    let (g, c) = (u32s(p.be, &ig)?, u32s(p.cpu, &ic)?);
    ensure(g == c, || format!("{what}: ids {g:?}, the CPU picked {c:?} (rows: {params:?})"))
}

fn route<B: Device>(env: &Env<B>) -> Result<(), String> {
    let p = env.pair();
    let mut r = Rng::new(10);
    let rules = [
        (MoeScoring::Softmax, TopkMethod::Greedy, 1, 1, 2),
        (MoeScoring::Softmax, TopkMethod::GroupLimitedGreedy, 4, 2, 3),
        (MoeScoring::Sigmoid, TopkMethod::NoauxTc, 4, 2, 2),
        (MoeScoring::Sigmoid, TopkMethod::NoauxTc, 8, 1, 1),
    ];
    for (scoring, topk_method, n_group, topk_group, top_k) in rules {
        for norm in [false, true] {
            let rule = MoeRouting { scoring, topk_method, n_group, topk_group, top_k, routed_scaling_factor: 2.5, norm_topk_prob: norm };
            let (t, e) = (7, 16);
            let what = format!("moe_route {rule:?}");
            let (lg, lc) = p.both(&host(&r.f32s(t * e).iter().map(|v| v * 4.0).collect::<Vec<_>>(), &[t, e], DType::F32))?;
            let (bg, bc) = p.both(&host(&r.f32s(e).iter().map(|v| v * 0.5).collect::<Vec<_>>(), &[e], DType::F32))?;
            let (mut ig, mut ic) = p.zeros_of(&[t, top_k], DType::U32)?;
            let (mut wg, mut wc) = p.zeros_of(&[t, top_k], DType::F32)?;
            p.be.moe_route(&lg, Some(&bg), &rule, &mut ig, &mut wg).map_err(fail(&what))?;
            p.cpu.moe_route(&lc, Some(&bc), &rule, &mut ic, &mut wc).map_err(fail(&what))?;
            let (gi, ci) = (u32s(p.be, &ig)?, u32s(p.cpu, &ic)?);
            ensure(gi == ci, || format!("{what}: experts {gi:?}, the CPU chose {ci:?}"))?;
            let (gw, cw) = p.f32s(&wg, &wc)?;
            close(&gw, &cw, Op::SiluMul.tol(DType::F32), &what)?;
            ensure(ci.chunks(top_k).all(|row| row.iter().all(|&x| (x as usize) < e)), || format!("{what}: an expert id out of range"))?;
        }
    }
    Ok(())
}
