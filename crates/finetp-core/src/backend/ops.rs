//! The compute contract: GEMM and the kernels a decoder step needs.
//!
//! Calls are *enqueued* on the backend's stream (a CUDA stream, an ACL stream, a wgpu queue;
//! the CPU backend runs them at once). Results are visible to later calls on the same backend
//! handle in issue order; [`Backend::download`](super::Backend::download) and
//! [`Backend::synchronize`](super::Backend::synchronize) are the only host sync points.
//! Outputs are preallocated by the caller, so a decode step can run on fixed buffers (graph
//! mode), and everything that changes between steps is a device tensor.
//!
//! "Activation" below means a float tensor in the backend's
//! [`activation_dtype`](super::Backend::activation_dtype); weights may be any float (or, when a
//! backend supports them, a quantised [`DType`](super::DType)); ids, slots, positions and block
//! tables are u32.

use super::{Backend, BackendError, Tensor};
use crate::config::{MoeConfig, MoeScoring, TopkMethod};

/// The sequence slot of a padding row: the KV-cache kernels skip it (writes) or give it zeros
/// (attention).
pub const PAD_SLOT: u32 = u32::MAX;

/// Which pairs of dimensions RoPE rotates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RopeStyle {
    /// GPT-NeoX / HF Llama: dimension `i` pairs with `i + rotary_dim/2`.
    Neox,
    /// GPT-J / original Llama / DeepSeek MLA rope part: dimension `2i` pairs with `2i + 1`.
    Interleaved,
}

/// A model's rotary embedding, made once at load. Every scaling scheme is one of these: those
/// that change frequencies (linear, NTK, Llama 3, YaRN's ramp) fold into `inv_freq`; YaRN's
/// attention factor (`mscale`) is `attention_factor`.
pub struct RopeTable<B: Backend> {
    /// f32 `[rotary_dim / 2]`: pair `i` at position `p` turns by `p · inv_freq[i]`; the first
    /// `rotary_dim` dims of each head rotate (partial rotary: the rest stay).
    pub inv_freq: Tensor<B>,
    pub style: RopeStyle,
    /// cos and sin are multiplied by this (1 for plain RoPE).
    pub attention_factor: f32,
}

/// Where each row of a step lives in a paged KV cache (vLLM's block tables).
///
/// A cache tensor is a pool `[blocks, block_size, heads, dim]`. Row `t` of a step belongs to
/// sequence slot `slots[t]` at position `positions[t]`; its keys/values are row
/// `positions[t] % block_size` of block `block_table[slots[t], positions[t] / block_size]`.
/// A contiguous cache is the special case of one block per sequence.
pub struct KvIndex<'a, B: Backend> {
    /// u32 `[S, max_blocks]`: each sequence slot's blocks, in position order.
    pub block_table: &'a Tensor<B>,
    /// u32 `[T]`: each row's sequence slot (a row of `block_table`), [`PAD_SLOT`] for padding.
    pub slots: &'a Tensor<B>,
    /// u32 `[T]`: each row's position in its sequence.
    pub positions: &'a Tensor<B>,
}

/// What varies between attention layers and models.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionParams {
    /// Scores are `q·k · scale`.
    pub scale: f32,
    /// A row at position `p` attends keys `p − w + 1 ..= p` only (Mistral's sliding window);
    /// `None`: keys `0 ..= p`.
    pub sliding_window: Option<u32>,
}

/// One row's sampling parameters: what [`Kernels::sample`] reads from its `params` tensor
/// (f32 `[M, 4]`, this struct's fields in order; build it with [`SampleParams::tensor`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleParams {
    /// `<= 0`: greedy (the first largest logit; NaN never wins).
    pub temperature: f32,
    /// Keep the smallest prefix of the sorted distribution whose mass reaches this (1: all).
    pub top_p: f32,
    /// Keep at most this many candidates first (0: no limit).
    pub top_k: u32,
    /// A uniform draw in `[0, 1)` from the request's own generator: which candidate is picked.
    pub uniform: f32,
}

impl SampleParams {
    pub const GREEDY: SampleParams = SampleParams { temperature: 0.0, top_p: 1.0, top_k: 0, uniform: 0.0 };

    /// The `[M, 4]` f32 tensor of `rows`, as the kernel reads it.
    pub fn tensor(rows: &[SampleParams]) -> super::HostTensor {
        let v: Vec<f32> = rows.iter().flat_map(|r| [r.temperature, r.top_p, r.top_k as f32, r.uniform]).collect();
        super::HostTensor { data: super::HostData::F32(v), shape: vec![rows.len(), 4] }
    }
}

/// How a mixture-of-experts layer picks experts for a token (DeepSeek-V2/V3, from the
/// checkpoint's config): what [`Kernels::moe_route`] computes, exactly as HF transformers does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MoeRouting {
    pub scoring: MoeScoring,
    pub topk_method: TopkMethod,
    pub n_group: usize,
    pub topk_group: usize,
    /// Experts per token.
    pub top_k: usize,
    pub routed_scaling_factor: f32,
    pub norm_topk_prob: bool,
}

impl From<&MoeConfig> for MoeRouting {
    fn from(m: &MoeConfig) -> Self {
        Self {
            scoring: m.scoring,
            topk_method: m.topk_method,
            n_group: m.n_group,
            topk_group: m.topk_group,
            top_k: m.num_experts_per_tok,
            routed_scaling_factor: m.routed_scaling_factor as f32,
            norm_topk_prob: m.norm_topk_prob,
        }
    }
}

/// Matrix products. Weights stay in the HF `[out, in]` layout.
pub trait Gemm: Backend {
    /// `y[m, n] = x[m, k] · w[n, k]ᵀ (+ bias[n])`.
    ///
    /// `x`, `y`: activations; `bias`: f32; `w`: any weight dtype the backend supports;
    /// accumulation is f32. `m` may be 0.
    fn linear(&self, x: &Tensor<Self>, w: &Tensor<Self>, bias: Option<&Tensor<Self>>, y: &mut Tensor<Self>) -> Result<(), BackendError>;
}

/// The element-wise, reduction, attention, routing and sampling kernels of a decoder.
pub trait Kernels: Backend {
    /// Vocab-parallel lookup: `y[t] = table[ids[t] - row_start]` when
    /// `row_start <= ids[t] < row_start + table.rows()`, else zeros (the id belongs to
    /// another shard). `ids`: u32 `[T]`; `table`: any float `[Vs, H]`; `y`: activation `[T, H]`.
    /// With `row_start = 0` it is also the row gather of any activation matrix (picking the
    /// rows whose logits are wanted).
    fn embedding(&self, ids: &Tensor<Self>, table: &Tensor<Self>, row_start: usize, y: &mut Tensor<Self>) -> Result<(), BackendError>;

    /// Per row: `y = x / sqrt(mean(x²) + eps) * w`. `x`, `y`: activations `[T, H]` (or
    /// `[T, n, H]`, normalised over the last dim `H = w.numel()`); `w`: any float `[H]`.
    fn rms_norm(&self, x: &Tensor<Self>, w: &Tensor<Self>, eps: f32, y: &mut Tensor<Self>) -> Result<(), BackendError>;

    /// Rotates `x [T, n_heads, head_dim]` (activations) in place. Row `t` is at position
    /// `positions[t]` (u32 `[T]`, on the device, so a captured step reads each replay's
    /// positions); see [`RopeTable`] for the angles and which dims turn.
    fn rope(&self, x: &mut Tensor<Self>, positions: &Tensor<Self>, table: &RopeTable<Self>) -> Result<(), BackendError>;

    /// `y[t, i] = silu(gu[t, i]) * gu[t, I + i]`: `gu [T, 2I]` (gate block then up block),
    /// `y [T, I]`.
    fn silu_mul(&self, gate_up: &Tensor<Self>, y: &mut Tensor<Self>) -> Result<(), BackendError>;

    /// `a += b`, same shape, activations.
    fn add_assign(&self, a: &mut Tensor<Self>, b: &Tensor<Self>) -> Result<(), BackendError>;

    /// Stores new keys (or values) `x [T, n, d]` in a paged cache `[blocks, block_size, n, d]`
    /// at each row's place (see [`KvIndex`]). Padding rows are skipped; a row whose slot,
    /// block or position falls outside the cache is an error (reported at the next sync point
    /// where the backend only sees it on the device).
    fn kv_cache_write(&self, x: &Tensor<Self>, cache: &mut Tensor<Self>, index: &KvIndex<'_, Self>) -> Result<(), BackendError>;

    /// Causal softmax attention of every query row over its own sequence's cache, with GQA.
    ///
    /// Row `t` of `q [T, nh, dk]` attends the keys of its sequence up to its own position
    /// (within the sliding window, if any) in `k_cache [blocks, bs, nkv, dk]` and
    /// `v_cache [blocks, bs, nkv, dv]`, written first by [`Kernels::kv_cache_write`];
    /// `nh % nkv == 0`, query head `h` reads kv head `h / (nh / nkv)`. Prefill rows of one
    /// sequence and decode rows of many mix freely in one call, which is what lets a decode
    /// step be captured once and replayed. `y [T, nh, dv]`; padding rows get zeros.
    fn kv_cache_attention(
        &self,
        q: &Tensor<Self>,
        k_cache: &Tensor<Self>,
        v_cache: &Tensor<Self>,
        index: &KvIndex<'_, Self>,
        params: &AttentionParams,
        y: &mut Tensor<Self>,
    ) -> Result<(), BackendError>;

    /// Picks one token per row of `logits [M, V]` on the device, into `ids` (u32 `[M]`), with
    /// each row's [`SampleParams`] from `params` (f32 `[M, 4]`), so a rank reads back `M` ids,
    /// not `M × V` logits.
    ///
    /// Exactly: greedy rows take the first largest logit (NaN never wins over a number).
    /// Others weigh token `i` by `exp((l_i − max) / temperature)`, computed in f64 from the
    /// logits (NaN weighs 0; if the largest logit is +∞, the +∞ logits weigh 1 and the rest 0),
    /// order candidates by weight, descending (ties: lower id first), keep the first `top_k`
    /// (0: all), then the shortest prefix whose weight reaches `top_p` (clamped to `[0, 1]`) of
    /// the kept weight, and return the first candidate at which the running weight reaches
    /// `uniform ×` the prefix's weight (the last one with any weight if rounding leaves a rest).
    fn sample(&self, logits: &Tensor<Self>, params: &Tensor<Self>, ids: &mut Tensor<Self>) -> Result<(), BackendError>;

    /// Mixture-of-experts routing of each token (row of `router_logits [T, E]`, f32), as HF
    /// transformers' DeepSeek-V2/V3: scores by softmax or sigmoid; choice scores (plus
    /// `bias [E]` for `noaux_tc`) masked to 0 outside the `topk_group` best expert groups
    /// (ranked by their best choice for `group_limited_greedy`, by their top-2 sum for
    /// `noaux_tc`); the `top_k` best choices (ties: lower expert first) go to `ids` (u32
    /// `[T, top_k]`, in that order) and their plain scores — normalised to sum 1 when
    /// `norm_topk_prob`, times `routed_scaling_factor` — to `weights` (f32 `[T, top_k]`).
    fn moe_route(
        &self,
        router_logits: &Tensor<Self>,
        bias: Option<&Tensor<Self>>,
        rule: &MoeRouting,
        ids: &mut Tensor<Self>,
        weights: &mut Tensor<Self>,
    ) -> Result<(), BackendError>;
}
