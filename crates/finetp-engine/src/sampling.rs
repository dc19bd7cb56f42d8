//! Greedy and temperature/top-p sampling, local to each DP rank (the lm_head's all-to-all has
//! already given every rank the full-vocabulary logits of its own tokens).

/// Sampling parameters; `temperature == 0` is greedy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Self { temperature: 0.0, top_p: 1.0, seed: 0 }
    }
}

/// A per-request generator: SplitMix64, seeded by (seed, request id), so results do not depend
/// on which rank serves the request or on batch composition.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: Sampling,
    state: u64,
}

impl Sampler {
    pub fn new(params: Sampling, request_id: usize) -> Self {
        Self { params, state: params.seed ^ (request_id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) }
    }

    fn uniform(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Picks a token from one row of logits.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let argmax = || {
            logits.iter().enumerate().fold((0usize, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0 as u32
        };
        if self.params.temperature <= 0.0 {
            return argmax();
        }
        let t = f64::from(self.params.temperature);
        let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let mut probs: Vec<(u32, f64)> =
            logits.iter().enumerate().map(|(i, &v)| (i as u32, (f64::from(v - max) / t).exp())).collect();
        probs.sort_by(|a, b| b.1.total_cmp(&a.1));
        let total: f64 = probs.iter().map(|p| p.1).sum();
        let mut kept = 0.0;
        let mut n = 0;
        for p in &probs {
            kept += p.1 / total;
            n += 1;
            if kept >= f64::from(self.params.top_p) {
                break;
            }
        }
        let mass: f64 = probs[..n].iter().map(|p| p.1).sum();
        let mut u = self.uniform() * mass;
        for p in &probs[..n] {
            u -= p.1;
            if u <= 0.0 {
                return p.0;
            }
        }
        probs[n - 1].0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_is_argmax_and_top_p_restricts_the_support() {
        let logits = [0.1, 3.0, 2.9, -1.0];
        assert_eq!(Sampler::new(Sampling::default(), 0).sample(&logits), 1);
        let mut s = Sampler::new(Sampling { temperature: 1.0, top_p: 0.5, seed: 3 }, 7);
        for _ in 0..100 {
            assert!(matches!(s.sample(&logits), 1 | 2));
        }
        let mut a = Sampler::new(Sampling { temperature: 1.0, top_p: 1.0, seed: 3 }, 7);
        let mut b = Sampler::new(Sampling { temperature: 1.0, top_p: 1.0, seed: 3 }, 7);
        let sa: Vec<u32> = (0..20).map(|_| a.sample(&logits)).collect();
        let sb: Vec<u32> = (0..20).map(|_| b.sample(&logits)).collect();
        assert_eq!(sa, sb, "seeded sampling is reproducible");
    }
}
