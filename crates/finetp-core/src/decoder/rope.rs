//! RoPE frequencies and the table a model's layers rotate with, scaled as the config says.
//!
//! Each scheme follows HF transformers' `modeling_rope_utils` (`_compute_*_parameters`), so a
//! checkpoint's positions mean what they meant in training; `tests/rope_scaling.rs` checks them
//! against the values HF computes.

use crate::backend::{BackendError, Device, HostTensor, RopeStyle, RopeTable};
use crate::config::RopeScaling;

/// `inv_freq[i] = theta^(-2i / rotary_dim)` for `i < rotary_dim / 2`: plain RoPE (Llama, Qwen,
/// DeepSeek's rope part), before any scaling.
fn plain(theta: f64, rotary_dim: usize) -> Vec<f64> {
    (0..rotary_dim / 2).map(|i| theta.powf(-2.0 * i as f64 / rotary_dim as f64)).collect()
}

/// YaRN's magnitude correction `0.1 · m · ln(scale) + 1` (1 for `scale <= 1`).
fn yarn_mscale(scale: f64, m: f64) -> f64 {
    if scale <= 1.0 { 1.0 } else { 0.1 * m * scale.ln() + 1.0 }
}

/// The inverse frequencies and the factor on cos/sin (`attention_factor`) of `rotary_dim`
/// dims under `scaling`.
pub fn rope_frequencies(theta: f64, rotary_dim: usize, scaling: Option<&RopeScaling>) -> (Vec<f32>, f32) {
    let base = plain(theta, rotary_dim);
    let (freqs, attention): (Vec<f64>, f64) = match scaling {
        None | Some(RopeScaling::Dynamic { .. }) => (base, 1.0),
        Some(&RopeScaling::Linear { factor }) => (base.iter().map(|f| f / factor).collect(), 1.0),
        Some(&RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings: old }) => {
            let (low_wavelen, high_wavelen) = (old / low_freq_factor, old / high_freq_factor);
            let f = base
                .iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect();
            (f, 1.0)
        }
        Some(&RopeScaling::Yarn { factor, original_max_position_embeddings: old, beta_fast, beta_slow, truncate, attention_factor, mscale, mscale_all_dim }) => {
            let dim = rotary_dim as f64;
            // The dimension whose wavelength turns `rotations` times over the training length.
            let correction_dim = |rotations: f64| dim * (old / (rotations * 2.0 * std::f64::consts::PI)).ln() / (2.0 * theta.ln());
            let (mut low, mut high) = (correction_dim(beta_fast), correction_dim(beta_slow));
            if truncate {
                (low, high) = (low.floor(), high.ceil());
            }
            let (low, mut high) = (low.max(0.0), high.min(dim - 1.0));
            if low == high {
                high += 0.001;
            }
            let f = base
                .iter()
                .enumerate()
                .map(|(i, &f)| {
                    let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                    let extrapolate = 1.0 - ramp;
                    (f / factor) * (1.0 - extrapolate) + f * extrapolate
                })
                .collect();
            let attention = match (attention_factor, mscale.filter(|&m| m != 0.0), mscale_all_dim.filter(|&m| m != 0.0)) {
                (Some(a), _, _) => a,
                (None, Some(m), Some(all)) => yarn_mscale(factor, m) / yarn_mscale(factor, all),
                (None, _, _) => yarn_mscale(factor, 1.0),
            };
            (f, attention)
        }
    };
    (freqs.into_iter().map(|f| f as f32).collect(), attention as f32)
}

/// What DeepSeek-V2/V3 multiply their softmax scale by under YaRN: `mscale(factor,
/// mscale_all_dim)²` (HF's `yarn_apply_mscale`); 1 otherwise.
pub fn deepseek_softmax_mscale(scaling: Option<&RopeScaling>) -> f32 {
    match scaling {
        Some(&RopeScaling::Yarn { factor, mscale_all_dim: Some(all), .. }) if all != 0.0 => {
            let m = yarn_mscale(factor, all);
            (m * m) as f32
        }
        _ => 1.0,
    }
}

/// The [`RopeTable`] of `rotary_dim` dims under `scaling`, uploaded once at load.
pub fn rope_table<B: Device>(be: &B, theta: f64, rotary_dim: usize, style: RopeStyle, scaling: Option<&RopeScaling>) -> Result<RopeTable<B>, BackendError> {
    let (f, attention_factor) = rope_frequencies(theta, rotary_dim, scaling);
    let n = f.len();
    Ok(RopeTable { inv_freq: be.upload(&HostTensor::f32(f, &[n])?)?, style, attention_factor })
}
