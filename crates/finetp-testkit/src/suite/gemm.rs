//! GEMM: every weight dtype, with and without bias, odd and empty shapes, against the CPU within
//! [`Op::Linear`] of `Σₖ |xₖ·wₖ|` per output.

use finetp_core::backend::{Backend, DType, Device, Gemm, HostData, HostTensor};

use super::data::{fail, host};
use super::{Case, Env};
use crate::Rng;
use crate::tolerance::{Op, close_scaled};

pub(super) fn cases<B: Device>() -> Vec<Case<B>> {
    vec![
        Case::new("gemm_linear_equals_the_cpu_for_every_weight_dtype_and_shape", &["Gemm::linear"], linear::<B>),
        Case::new("gemm_block_weights_are_multiplied_as_stored_or_refused", &["Backend::keeps_weight_dtype", "Backend::decoded_weight_dtype"], blocks::<B>),
    ]
}

/// `n` rows of `k` (a multiple of 32) elements of block format `dt`, with random scales,
/// minima and quants.
fn block_weights(r: &mut Rng, dt: DType, n: usize, k: usize) -> HostTensor {
    let mut bytes = Vec::new();
    for _ in 0..n * k / 32 {
        bytes.extend(half::f16::from_f32(r.f32() * 0.1).to_le_bytes());
        if dt == DType::Q4_1 {
            bytes.extend(half::f16::from_f32(r.f32() * 0.5).to_le_bytes());
        }
        bytes.extend((0..if dt == DType::Q8_0 { 32 } else { 16 }).map(|_| r.next_u64() as u8));
    }
    HostTensor::new(HostData::Quantized { dtype: dt, bytes }, &[n, k]).expect("whole blocks")
}

/// A block format the backend does not keep is uploaded by the layers decoded to the backend's
/// [`decoded_weight_dtype`](Backend::decoded_weight_dtype): a float it keeps, multiplied as the
/// CPU multiplies the same decoded weights.
fn decoded<B: Device>(p: &super::Pair<'_, B>, r: &mut Rng, w: &HostTensor, m: usize) -> Result<(), String> {
    let d = p.be.decoded_weight_dtype();
    let what = format!("linear of {} weights decoded to {d}", w.dtype());
    if !d.is_float() || !p.be.keeps_weight_dtype(d) {
        return Err(format!("{what}: the backend decodes to a dtype it does not keep"));
    }
    let dec = w.clone().into_dtype(d).map_err(fail(&what))?;
    let [n, k] = *dec.shape.as_slice() else { return Err(format!("{what}: not 2-D")) };
    let x = r.f32s(m * k);
    let (wg, wc) = p.both(&dec)?;
    let (xg, xc) = p.acts(&x, &[m, k])?;
    let (mut yg, mut yc) = p.zeros(&[m, n])?;
    p.be.linear(&xg, &wg, None, &mut yg).map_err(fail(&what))?;
    p.cpu.linear(&xc, &wc, None, &mut yc).map_err(fail(&what))?;
    let (got, want) = p.f32s(&yg, &yc)?;
    let ws = dec.to_f32_vec().unwrap_or_default();
    let mag = |o: usize| (0..k).map(|c| (x[o / n * k + c] * ws[o % n * k + c]).abs()).sum::<f32>().max(1e-30);
    close_scaled(&got, &want, Op::Linear.tol(p.act()), mag, &what)
}

/// Block-format weights (GGUF Q8_0 / Q4_0 / Q4_1): a backend that keeps a format multiplies by
/// its blocks within the error of quantising the activations per block of 32 (each moves by
/// at most half a step, `max|x_block| / 254`), against the CPU on the decoded weights; one that
/// does not keep it says so, and refusing to upload it is an error, not a panic. Floats are
/// always kept.
fn blocks<B: Device>(env: &Env<B>) -> Result<(), String> {
    let p = env.pair();
    let mut r = Rng::new(29);
    for dt in [DType::F32, DType::BF16, DType::F16] {
        if !p.be.keeps_weight_dtype(dt) {
            return Err(format!("{dt} weights are not kept"));
        }
    }
    for dt in [DType::Q8_0, DType::Q4_0, DType::Q4_1] {
        let (m, n, k) = (5, 37, 32 * 7);
        let w = block_weights(&mut r, dt, n, k);
        if !p.be.keeps_weight_dtype(dt) {
            let _ = p.be.upload(&w); // either way: no panic
            decoded(&p, &mut r, &w, m)?;
            continue;
        }
        let what = format!("linear m {m} n {n} k {k} {dt} weights");
        let x = r.f32s(m * k);
        let deq = w.clone().into_dtype(DType::F32).map_err(fail(&what))?;
        let wg = p.be.upload(&w).map_err(fail(&what))?;
        let wc = p.cpu.upload(&deq).map_err(fail(&what))?;
        let (xg, xc) = p.acts(&x, &[m, k])?;
        let (mut yg, mut yc) = p.zeros(&[m, n])?;
        p.be.linear(&xg, &wg, None, &mut yg).map_err(fail(&what))?;
        p.cpu.linear(&xc, &wc, None, &mut yc).map_err(fail(&what))?;
        let (got, want) = p.f32s(&yg, &yc)?;
        let ws = deq.to_f32_vec().unwrap_or_default();
        for (o, (g, e)) in got.iter().zip(&want).enumerate() {
            let (i, j) = (o / n, o % n);
            let bound: f32 = (0..k)
                .map(|c| {
                    let blk = &x[i * k + c / 32 * 32..i * k + c / 32 * 32 + 32];
                    ws[j * k + c].abs() * blk.iter().fold(0f32, |a, v| a.max(v.abs())) / 254.0
                })
                .sum::<f32>()
                * 1.01
                + 1e-5;
            if (g - e).abs() > bound {
                return Err(format!("{what}: y[{i}, {j}] = {g}, the decoded weights give {e} (bound {bound})"));
            }
        }
    }
    Ok(())
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
