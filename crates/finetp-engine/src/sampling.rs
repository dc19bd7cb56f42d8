//! Per-request sampling parameters and generators. The sampling itself runs on the device
//! (`Kernels::sample`), local to each DP rank (the lm_head's all-to-all has already given every
//! rank the full-vocabulary logits of its own tokens); each request's generator supplies the
//! uniform draw of every step, so results depend neither on the rank nor on the batch.

use finetp_core::backend::SampleParams;

/// Sampling parameters; `temperature == 0` is greedy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    pub temperature: f32,
    pub top_p: f32,
    /// At most this many candidates (0: no limit).
    pub top_k: u32,
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Self { temperature: 0.0, top_p: 1.0, top_k: 0, seed: 0 }
    }
}

/// A per-request generator: SplitMix64, seeded by (seed, stream) — the stream is the request's
/// id unless it names one — so results depend neither on the rank nor on batch composition.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: Sampling,
    state: u64,
}

impl Sampler {
    pub fn new(params: Sampling, stream: u64) -> Self {
        Self { params, state: params.seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15) }
    }

    /// A uniform draw in `[0, 1)` with 24 bits (exactly representable as f32).
    fn uniform(&mut self) -> f32 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u32 << 24) as f32
    }

    /// This step's parameters for the device's
    /// [`sample`](finetp_core::backend::Kernels::sample): a fresh uniform draw when sampling,
    /// none when greedy (so a greedy request's generator never advances).
    pub fn next_params(&mut self) -> SampleParams {
        let p = self.params;
        if p.temperature <= 0.0 {
            return SampleParams::GREEDY;
        }
        SampleParams { temperature: p.temperature, top_p: p.top_p, top_k: p.top_k, uniform: self.uniform() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_draws_nothing_and_seeded_draws_repeat() {
        let mut g = Sampler::new(Sampling::default(), 3);
        assert_eq!(g.next_params(), SampleParams::GREEDY);
        let p = Sampling { temperature: 0.7, top_p: 0.9, top_k: 5, seed: 11 };
        let (mut a, mut b, mut c) = (Sampler::new(p, 7), Sampler::new(p, 7), Sampler::new(p, 8));
        let da: Vec<f32> = (0..20).map(|_| a.next_params().uniform).collect();
        let db: Vec<f32> = (0..20).map(|_| b.next_params().uniform).collect();
        let dc: Vec<f32> = (0..20).map(|_| c.next_params().uniform).collect();
        assert_eq!(da, db, "the same request and seed draw the same");
        assert_ne!(da, dc, "another request draws otherwise");
        assert!(da.iter().all(|u| (0.0..1.0).contains(u)));
        let q = a.next_params();
        assert_eq!((q.temperature, q.top_p, q.top_k), (0.7, 0.9, 5));
    }
}
