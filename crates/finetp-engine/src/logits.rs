//! What a step does with logits on the host, when a request asks for it: log-probabilities
//! (and the most likely alternatives) of each row, and repetition penalties applied before the
//! device samples. Each rank holds full-vocabulary logits of its own rows (the lm_head's
//! exchange has already gathered them under lm_head TP), so both are exact under any size.

use crate::request::{Penalties, TokenLogprob};

/// Logits of a step's logit rows on the host, f32 `[rows, vocab]`.
pub(crate) struct HostLogits {
    pub vocab: usize,
    pub data: Vec<f32>,
}

impl HostLogits {
    pub(crate) fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.vocab..(i + 1) * self.vocab]
    }
}

/// `log_softmax(row)[token]` and the `top` most likely tokens (ties: lower id first), summed
/// in f64. NaN logits weigh nothing, as in the sampler.
pub(crate) fn logprob(row: &[f32], token: u32, top: usize) -> TokenLogprob {
    let max = row.iter().copied().filter(|x| !x.is_nan()).fold(f32::NEG_INFINITY, f32::max);
    let lse = if max.is_infinite() {
        f64::from(max)
    } else {
        let m = f64::from(max);
        m + row.iter().filter(|x| !x.is_nan()).map(|&x| (f64::from(x) - m).exp()).sum::<f64>().ln()
    };
    let lp = |x: f32| if x.is_nan() { f32::NEG_INFINITY } else { (f64::from(x) - lse) as f32 };
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(top + 1);
    if top > 0 {
        for (id, &x) in row.iter().enumerate() {
            let x = if x.is_nan() { f32::NEG_INFINITY } else { x };
            if best.len() == top && x <= best[top - 1].1 {
                continue;
            }
            // After the last entry at least as large: ties keep the lower id first.
            let at = best.partition_point(|&(_, y)| y >= x);
            best.insert(at, (id as u32, x));
            best.truncate(top);
        }
    }
    TokenLogprob {
        token,
        logprob: row.get(token as usize).map_or(f32::NEG_INFINITY, |&x| lp(x)),
        top: best.into_iter().map(|(id, x)| (id, lp(x))).collect(),
    }
}

/// The subtractions `penalties` make for a sequence that has generated `generated`:
/// `(token, frequency · count + presence)` for each distinct token, in id order.
pub(crate) fn penalty_adjustments(penalties: Penalties, generated: &[u32]) -> Vec<(u32, f32)> {
    if penalties.is_none() {
        return Vec::new();
    }
    let mut ids = generated.to_vec();
    ids.sort_unstable();
    let mut out: Vec<(u32, f32)> = Vec::new();
    for id in ids {
        match out.last_mut() {
            Some((last, n)) if *last == id => *n += 1.0,
            _ => out.push((id, 1.0)),
        }
    }
    out.into_iter().map(|(id, n)| (id, penalties.frequency * n + penalties.presence)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_probabilities_against_a_direct_softmax() {
        let row = [1.0f32, 3.0, 2.0, 3.0, f32::NAN, -1.0];
        let z: f64 = row.iter().filter(|x| !x.is_nan()).map(|&x| f64::from(x).exp()).sum();
        let t = logprob(&row, 2, 3);
        assert!((f64::from(t.logprob) - (2.0f64.exp() / z).ln()).abs() < 1e-6);
        assert_eq!(t.top.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 3, 2], "ties: lower id first");
        assert!((f64::from(t.top[0].1) - (3.0f64.exp() / z).ln()).abs() < 1e-6);
        assert_eq!(logprob(&row, 4, 0).logprob, f32::NEG_INFINITY, "NaN weighs nothing");
        assert!(logprob(&row, 0, 0).top.is_empty());
    }

    #[test]
    fn penalties_count_each_generated_token() {
        let p = Penalties { frequency: 0.5, presence: 0.25 };
        assert_eq!(penalty_adjustments(p, &[7, 3, 7, 7]), [(3, 0.75), (7, 1.75)]);
        assert!(penalty_adjustments(Penalties::default(), &[1, 2]).is_empty());
    }
}
