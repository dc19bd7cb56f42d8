//! Picking the next token of each logits row, exactly as the contract states
//! ([`Kernels::sample`](finetp_core::backend::Kernels::sample)): the reference every other
//! backend's sampling is checked against.
//!
//! Order is total and deterministic: larger values first, equal values by lower index, NaN
//! below every number (a NaN logit is never picked over a real one).

use std::cmp::Ordering;

use finetp_core::backend::{BackendError, Tensor, checks};

use crate::storage::CpuBackend;

/// The first largest value (NaN never wins over a number; all-NaN gives 0).
pub(crate) fn argmax(r: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in r.iter().enumerate() {
        // `>` keeps the first of equal maxima and never picks NaN over a number.
        if x > r[best] || (r[best].is_nan() && !x.is_nan()) {
            best = i;
        }
    }
    best as u32
}

/// One row's token under `(temperature, top_p, top_k, uniform)`.
pub(crate) fn sample_row(logits: &[f32], [temperature, top_p, top_k, uniform]: [f32; 4]) -> u32 {
    if temperature.is_nan() || temperature <= 0.0 {
        return argmax(logits);
    }
    let t = f64::from(temperature);
    let max = logits.iter().copied().filter(|v| !v.is_nan()).fold(f32::NEG_INFINITY, f32::max);
    let weight = |v: f32| -> f64 {
        if v.is_nan() {
            0.0
        } else if max == f32::INFINITY {
            // Infinite logits share all the weight.
            if v == f32::INFINITY { 1.0 } else { 0.0 }
        } else {
            ((f64::from(v) - f64::from(max)) / t).exp()
        }
    };
    let mut cand: Vec<(u32, f64)> = logits.iter().enumerate().map(|(i, &v)| (i as u32, weight(v))).collect();
    // Descending weight, ties by lower id.
    cand.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(Ordering::Equal).then(a.0.cmp(&b.0)));
    let k = top_k as usize;
    if k > 0 && k < cand.len() {
        cand.truncate(k);
    }
    let total: f64 = cand.iter().map(|c| c.1).sum();
    let top_p = if top_p.is_nan() { 1.0 } else { f64::from(top_p.clamp(0.0, 1.0)) };
    let goal = top_p * total;
    let mut kept = 0.0;
    let mut n = 0;
    for c in &cand {
        kept += c.1;
        n += 1;
        if kept >= goal {
            break;
        }
    }
    let mass: f64 = cand[..n].iter().map(|c| c.1).sum();
    let mut u = f64::from(uniform.clamp(0.0, 1.0)) * mass;
    for c in &cand[..n] {
        u -= c.1;
        if u <= 0.0 {
            return c.0;
        }
    }
    // Rounding left a sliver of `u`: the last candidate that has any weight.
    cand[..n].iter().rev().find(|c| c.1 > 0.0).unwrap_or(&cand[0]).0
}

pub(super) fn sample(logits: &Tensor<CpuBackend>, params: &Tensor<CpuBackend>, ids: &mut Tensor<CpuBackend>) -> Result<(), BackendError> {
    let (m, v) = checks::sample(logits, params, ids)?;
    let l = logits.buffer().as_f32("sample (logits)")?;
    let p = params.buffer().as_f32("sample (params)")?;
    let out = ids.buffer_mut().as_u32_mut("sample (ids)")?;
    for r in 0..m {
        let row = &l[r * v..(r + 1) * v];
        out[r] = sample_row(row, [p[4 * r], p[4 * r + 1], p[4 * r + 2], p[4 * r + 3]]);
    }
    Ok(())
}
