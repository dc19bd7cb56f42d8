//! Greedy and top-k selection over logits rows.
//!
//! Order is total and deterministic: larger values first, equal values by lower index, NaN
//! below every number (a NaN logit is never picked over a real one).

use std::cmp::Ordering;

use finetp_core::backend::{BackendError, Tensor};

use super::rows_cols;
use crate::storage::CpuBackend;

/// `a` before `b` in the selection order (descending value, then ascending index, NaN last).
fn rank(a: &(f32, u32), b: &(f32, u32)) -> Ordering {
    let key = |v: f32| if v.is_nan() { f32::NEG_INFINITY } else { v };
    // Keys are never NaN, so `partial_cmp` is total here (and -0.0 ties with 0.0).
    key(b.0).partial_cmp(&key(a.0)).unwrap_or(Ordering::Equal).then_with(|| a.0.is_nan().cmp(&b.0.is_nan())).then(a.1.cmp(&b.1))
}

/// The logits as rows of `v`, rejecting empty rows when there are rows at all.
fn rows<'a>(logits: &'a Tensor<CpuBackend>, op: &'static str) -> Result<(usize, usize, &'a [f32]), BackendError> {
    let (t, v) = rows_cols(logits, op)?;
    let l = logits.buffer().as_f32(op)?;
    if v == 0 && t > 0 {
        return Err(BackendError::Shape(format!("{op}: rows of zero logits {:?}", logits.shape())));
    }
    Ok((t, v, l))
}

pub(super) fn argmax(logits: &Tensor<CpuBackend>) -> Result<Vec<u32>, BackendError> {
    let (_, v, l) = rows(logits, "argmax")?;
    if l.is_empty() {
        return Ok(Vec::new());
    }
    Ok(l.chunks_exact(v)
        .map(|r| {
            let mut best = 0;
            for (i, &x) in r.iter().enumerate() {
                // `>` keeps the first of equal maxima and never picks NaN over a number.
                if x > r[best] || (r[best].is_nan() && !x.is_nan()) {
                    best = i;
                }
            }
            best as u32
        })
        .collect())
}

pub(super) fn top_k(logits: &Tensor<CpuBackend>, k: usize) -> Result<Vec<Vec<(f32, u32)>>, BackendError> {
    let (t, v, l) = rows(logits, "top_k")?;
    if l.is_empty() {
        return Ok(vec![Vec::new(); t]);
    }
    let k = k.min(v);
    Ok(l.chunks_exact(v)
        .map(|r| {
            if k == 0 {
                return Vec::new();
            }
            let mut idx: Vec<(f32, u32)> = r.iter().enumerate().map(|(i, &x)| (x, i as u32)).collect();
            if k < v {
                // Partition in O(V), then sort only the k winners.
                idx.select_nth_unstable_by(k - 1, rank);
                idx.truncate(k);
            }
            idx.sort_unstable_by(rank);
            idx
        })
        .collect())
}
