//! The compute contract: GEMM and the kernels a decoder forward needs.
//!
//! Calls are *enqueued* on the backend's stream (a CUDA stream, an ACL stream, a wgpu queue;
//! the CPU backend runs them at once). Results are visible to later calls on the same backend
//! handle in issue order; [`Backend::download`](super::Backend::download) and
//! [`Backend::synchronize`](super::Backend::synchronize) are the only host sync points.
//! Outputs are preallocated by the caller, so a decode step can run on fixed buffers (graph mode).

use super::{Backend, BackendError, Tensor};

/// The KV-cache slot of a padding row: [`Kernels::kv_cache_write`] skips it and
/// [`Kernels::kv_cache_attention`] gives it zeros.
pub const PAD_SLOT: u32 = u32::MAX;

/// Which pairs of dimensions RoPE rotates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RopeStyle {
    /// GPT-NeoX / HF Llama: dimension `i` pairs with `i + rotary_dim/2`.
    Neox,
    /// GPT-J / original Llama / DeepSeek MLA rope part: dimension `2i` pairs with `2i + 1`.
    Interleaved,
}

/// Matrix products. Weights stay in the HF `[out, in]` layout.
pub trait Gemm: Backend {
    /// `y[m, n] = x[m, k] · w[n, k]ᵀ (+ bias[n])`.
    ///
    /// `x`, `y`, `bias`: f32. `w`: f32, bf16 or f16; accumulation is f32. `m` may be 0.
    fn linear(
        &self,
        x: &Tensor<Self>,
        w: &Tensor<Self>,
        bias: Option<&Tensor<Self>>,
        y: &mut Tensor<Self>,
    ) -> Result<(), BackendError>;

    /// `y[b] = x[b] · w[b]ᵀ` for each `b`: `x [B, m, k]`, `w [B, n, k]`, `y [B, m, n]`, all f32
    /// except `w` (any float). Used by MLA's per-head absorbed projections.
    fn batched_linear(
        &self,
        x: &Tensor<Self>,
        w: &Tensor<Self>,
        y: &mut Tensor<Self>,
    ) -> Result<(), BackendError>;
}

/// The element-wise and reduction kernels of a decoder. Activations are f32.
pub trait Kernels: Backend {
    /// Vocab-parallel lookup: `y[t] = table[ids[t] - row_start]` when
    /// `row_start <= ids[t] < row_start + table.rows()`, else zeros (the id belongs to
    /// another shard). `ids`: u32 `[T]`; `table`: any float `[Vs, H]`; `y`: f32 `[T, H]`.
    /// With `row_start = 0` it is also the row gather of any f32 matrix (picking the rows
    /// whose logits are wanted).
    fn embedding(
        &self,
        ids: &Tensor<Self>,
        table: &Tensor<Self>,
        row_start: usize,
        y: &mut Tensor<Self>,
    ) -> Result<(), BackendError>;

    /// Per row: `y = x / sqrt(mean(x²) + eps) * w`. `x`, `y`: f32 `[T, H]` (or `[T, n, H]`,
    /// normalised over the last dim `H = w.numel()`); `w`: any float `[H]`.
    fn rms_norm(
        &self,
        x: &Tensor<Self>,
        w: &Tensor<Self>,
        eps: f32,
        y: &mut Tensor<Self>,
    ) -> Result<(), BackendError>;

    /// Rotates `x [T, n_heads, head_dim]` in place. Row `t` is at position `positions[t]`
    /// (u32 `[T]`, on the device, so a captured step reads each replay's positions); the first
    /// `rotary_dim = 2 * inv_freq.numel()` dims of each head are rotated, the rest untouched.
    /// The angle of pair `i` at position `p` is `p * inv_freq[i]` (f32 `[rotary_dim / 2]`;
    /// scaling schemes such as YaRN are folded into `inv_freq` by the caller).
    fn rope(
        &self,
        x: &mut Tensor<Self>,
        positions: &Tensor<Self>,
        inv_freq: &Tensor<Self>,
        style: RopeStyle,
    ) -> Result<(), BackendError>;

    /// `y[t, i] = silu(gu[t, i]) * gu[t, I + i]`: `gu [T, 2I]` (gate block then up block),
    /// `y [T, I]`.
    fn silu_mul(&self, gate_up: &Tensor<Self>, y: &mut Tensor<Self>) -> Result<(), BackendError>;

    /// `a += b`, same shape, f32.
    fn add_assign(&self, a: &mut Tensor<Self>, b: &Tensor<Self>) -> Result<(), BackendError>;

    /// `a *= s`, f32.
    fn scale(&self, a: &mut Tensor<Self>, s: f32) -> Result<(), BackendError>;

    /// Stores new keys (or values) in a KV cache: row `t` of `x [T, n, d]` becomes row
    /// `positions[t]` of slot `slots[t]` in `cache [S, L, n, d]` (`S` sequence slots of `L`
    /// rows). Rows whose slot is [`PAD_SLOT`] are padding and are skipped. `slots`,
    /// `positions`: u32 `[T]` on the device; all f32.
    fn kv_cache_write(
        &self,
        x: &Tensor<Self>,
        cache: &mut Tensor<Self>,
        slots: &Tensor<Self>,
        positions: &Tensor<Self>,
    ) -> Result<(), BackendError>;

    /// Causal softmax attention of every query row over its own sequence's cache, with GQA.
    ///
    /// Row `t` of `q [T, nh, dk]` belongs to slot `slots[t]` at position `positions[t]` and
    /// attends keys `0..=positions[t]` of that slot in `k_cache [S, L, nkv, dk]` and
    /// `v_cache [S, L, nkv, dv]` (written first by [`Kernels::kv_cache_write`]); `nh % nkv == 0`,
    /// query head `h` reads kv head `h / (nh / nkv)`. Scores are `q·k * scale`. Prefill rows of
    /// one sequence and decode rows of many mix freely in one call, which is what lets a decode
    /// step be captured once and replayed. `y [T, nh, dv]`; padding rows ([`PAD_SLOT`]) get
    /// zeros.
    #[allow(clippy::too_many_arguments)]
    fn kv_cache_attention(
        &self,
        q: &Tensor<Self>,
        k_cache: &Tensor<Self>,
        v_cache: &Tensor<Self>,
        slots: &Tensor<Self>,
        positions: &Tensor<Self>,
        scale: f32,
        y: &mut Tensor<Self>,
    ) -> Result<(), BackendError>;

    /// Index of the largest value of each row of `logits [T, V]` (first one on ties).
    fn argmax(&self, logits: &Tensor<Self>) -> Result<Vec<u32>, BackendError>;

    /// The `k` largest `(value, index)` pairs of each row of `logits [T, V]`, descending.
    fn top_k(&self, logits: &Tensor<Self>, k: usize) -> Result<Vec<Vec<(f32, u32)>>, BackendError>;
}
