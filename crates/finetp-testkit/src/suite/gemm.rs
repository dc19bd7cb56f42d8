//! GEMM: every weight dtype, with and without bias, odd and empty shapes, against the CPU within
//! [`Op::Linear`] of `Σₖ |xₖ·wₖ|` per output.

use finetp_core::backend::{DType, Device, Gemm};

use super::data::{fail, host};
use super::{Case, Env};
use crate::Rng;
use crate::tolerance::{Op, close_scaled};

pub(super) fn cases<B: Device>() -> Vec<Case<B>> {
    vec![Case::new("gemm_linear_equals_the_cpu_for_every_weight_dtype_and_shape", &["Gemm::linear"], linear::<B>)]
}

fn linear<B: Device>(env: &Env<B>) -> Result<(), String> {
    let p = env.pair();
    let tol = Op::Linear.tol(p.act());
    let mut r = Rng::new(11);
    for (m, n, k) in [(1, 1, 1), (3, 5, 7), (1, 576, 576), (8, 130, 96), (17, 33, 1000), (0, 4, 8), (5, 3, 2049)] {
        for dt in [DType::F32, DType::BF16, DType::F16] {
            for with_bias in [false, true] {
                let what = format!("linear m {m} n {n} k {k} {dt} weights, bias {with_bias}");
                let x = r.f32s(m * k);
                let w = host(&r.f32s(n * k), &[n, k], dt);
                let bias = host(&r.f32s(n), &[n], DType::F32);
                let (xg, xc) = p.acts(&x, &[m, k])?;
                let (wg, wc) = p.both(&w)?;
                let (bg, bc) = p.both(&bias)?;
                let (mut yg, mut yc) = p.zeros(&[m, n])?;
                p.be.linear(&xg, &wg, with_bias.then_some(&bg), &mut yg).map_err(fail(&what))?;
                p.cpu.linear(&xc, &wc, with_bias.then_some(&bc), &mut yc).map_err(fail(&what))?;
                let (got, want) = p.f32s(&yg, &yc)?;
                // Σ|x·w| (plus |bias|) of each output, from the weights as stored.
                let ws = w.to_f32_vec().unwrap_or_default();
                let mag: Vec<f32> = (0..m * n)
                    .map(|o| {
                        let (i, j) = (o / n, o % n);
                        let s: f32 = (0..k).map(|c| (x[i * k + c] * ws[j * k + c]).abs()).sum();
                        (s + if with_bias { bias.to_f32_vec().unwrap_or_default()[j].abs() } else { 0.0 }).max(1e-30)
                    })
                    .collect();
                close_scaled(&got, &want, tol, |i| mag[i], &what)?;
            }
        }
    }
    Ok(())
}
