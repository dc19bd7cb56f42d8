//! RoPE frequencies and the table a model's layers rotate with.

use crate::backend::{BackendError, Device, HostTensor, RopeStyle, RopeTable};

/// `inv_freq[i] = theta^(-2i / rotary_dim)` for `i < rotary_dim / 2`, the plain RoPE of Llama,
/// Qwen and DeepSeek's rope part (scaling schemes adjust these before use).
pub fn rope_inv_freq(theta: f64, rotary_dim: usize) -> Vec<f32> {
    (0..rotary_dim / 2).map(|i| theta.powf(-2.0 * i as f64 / rotary_dim as f64) as f32).collect()
}

/// The plain-RoPE [`RopeTable`] of `rotary_dim` dims, uploaded once at load.
pub fn rope_table<B: Device>(be: &B, theta: f64, rotary_dim: usize, style: RopeStyle) -> Result<RopeTable<B>, BackendError> {
    let f = rope_inv_freq(theta, rotary_dim);
    let n = f.len();
    Ok(RopeTable { inv_freq: be.upload(&HostTensor::f32(f, &[n])?)?, style, attention_factor: 1.0 })
}
