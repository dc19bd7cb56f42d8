//! RoPE frequencies.

/// `inv_freq[i] = theta^(-2i / rotary_dim)` for `i < rotary_dim / 2`, the plain RoPE of Llama,
/// Qwen and DeepSeek's rope part (scaling schemes adjust these before use).
pub fn rope_inv_freq(theta: f64, rotary_dim: usize) -> Vec<f32> {
    (0..rotary_dim / 2).map(|i| theta.powf(-2.0 * i as f64 / rotary_dim as f64) as f32).collect()
}
