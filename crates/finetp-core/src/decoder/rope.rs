//! RoPE frequencies.

use crate::backend::{BackendError, Device, HostTensor, Tensor};

/// `inv_freq[i] = theta^(-2i / rotary_dim)` for `i < rotary_dim / 2`, the plain RoPE of Llama,
/// Qwen and DeepSeek's rope part (scaling schemes adjust these before use).
pub fn rope_inv_freq(theta: f64, rotary_dim: usize) -> Vec<f32> {
    (0..rotary_dim / 2).map(|i| theta.powf(-2.0 * i as f64 / rotary_dim as f64) as f32).collect()
}

/// [`rope_inv_freq`] as a device tensor `[rotary_dim / 2]`, uploaded once at load.
pub fn rope_inv_freq_tensor<B: Device>(be: &B, theta: f64, rotary_dim: usize) -> Result<Tensor<B>, BackendError> {
    let f = rope_inv_freq(theta, rotary_dim);
    let n = f.len();
    be.upload(&HostTensor::f32(f, &[n])?)
}
