//! Multi-head latent attention with a fine-grained o_proj, over a latent KV cache.
//!
//! The cache holds, per token and layer, the normed compressed latent `c` (`kv_lora_rank`) and
//! the roped key `k_pe` (`qk_rope_head_dim`), shared by every head: DeepSeek's point. Attention
//! is absorbed (the MLA paper's and vLLM's decode form): with `kv_b` split per head into
//! `W_UK [nope, L]` and `W_UV [vd, L]`, a head's score `q_nope·(W_UK c) + q_pe·k_pe` is
//! `(W_UKᵀ q_nope)·c + q_pe·k_pe`, so each query becomes `[W_UKᵀ q_nope, q_pe]` and attends the
//! cached `[c, k_pe]` rows directly (one KV head, MQA); the head's output `W_UV (Σ p c)` is the
//! latent part of the attention output times `W_UV`. Prefill and decode rows take the same
//! path, so a decode step is still one captured graph.

use finetp_core::backend::{AttentionParams, Block, DType, Device, HostData, HostTensor, RopeTable, Tensor};
use finetp_core::config::{MlaConfig, ModelConfig};
use finetp_core::decoder::{HeadShard, KvCache, ModelError, StepBatch, deepseek_softmax_mscale};
use finetp_core::layers::{LayerGroups, RowParallelOProj, linear};
use finetp_core::shard::{Axis, ShardSpec, WeightSource};

/// Query path: low-rank (`q_a_proj` → norm → `q_b_proj`) or a plain `q_proj`.
enum QueryProj<B: Device> {
    LowRank { a: Tensor<B>, norm: Tensor<B>, b: Tensor<B> },
    Full(Tensor<B>),
}

/// One head's `(W_UKᵀ [L, nope], W_UV [vd, L])`.
type Absorbed<B> = (Tensor<B>, Tensor<B>);

pub struct Mla<B: Device> {
    q: QueryProj<B>,
    /// `[kv_lora_rank + qk_rope_head_dim, H]`.
    kv_a: Tensor<B>,
    kv_a_norm: Tensor<B>,
    /// This rank's heads' halves of `kv_b`: `W_UKᵀ [L, nope]` (as an `[out, in]` weight turning
    /// `q_nope` into latent space) and `W_UV [vd, L]`.
    absorb: Vec<Absorbed<B>>,
    o_proj: RowParallelOProj<B>,
    m: MlaConfig,
    heads: usize,
    eps: f32,
    /// `1/sqrt(qk_nope + qk_rope)`, times YaRN's `mscale²` when the config scales RoPE so.
    softmax_scale: f32,
}

/// Loads a replicated tensor after checking its shape.
pub fn full<B: Device>(be: &B, src: &dyn WeightSource, name: &str, shape: &[usize]) -> Result<Tensor<B>, ModelError> {
    src.expect_shape(name, shape)?;
    Ok(be.upload(&src.load_full(name)?)?)
}

/// Loads a replicated norm weight in f32 whatever the checkpoint stores (converted once, here).
pub fn norm_weight<B: Device>(be: &B, src: &dyn WeightSource, name: &str, len: usize) -> Result<Tensor<B>, ModelError> {
    src.expect_shape(name, &[len])?;
    Ok(be.upload(&src.load_full(name)?.into_dtype(DType::F32)?)?)
}

impl<B: Device> Mla<B> {
    /// Under TP (vLLM's MLA split): `q_a`, `kv_a` and their norms replicated (the latent is
    /// shared by every head); `q_b`/`q_proj` and `kv_b` column-parallel by heads; o_proj
    /// row-parallel. This rank then runs `nh/t` heads end to end.
    pub fn load(be: &B, cfg: &ModelConfig, src: &dyn WeightSource, prefix: &str, o_groups: LayerGroups<B>) -> Result<Self, ModelError> {
        let m = cfg.mla.ok_or_else(|| ModelError::Config("DeepSeek-V2/V3 needs MLA fields (kv_lora_rank, ...)".into()))?;
        let (h, nh) = (cfg.hidden_size, cfg.num_attention_heads);
        let heads = HeadShard::new(nh, nh, o_groups.tp_rank(), o_groups.tp_size()).q;
        let qk = m.qk_nope_head_dim + m.qk_rope_head_dim;
        let kvb = m.qk_nope_head_dim + m.v_head_dim;
        let p = |n: &str| format!("{prefix}.{n}");
        let by_heads = |name: &str, shape: &[usize], per_head: usize| -> Result<Tensor<B>, ModelError> {
            src.expect_shape(name, shape)?;
            Ok(be.upload(&src.load(name, &ShardSpec::range(Axis::Rows, heads.start * per_head, heads.len() * per_head))?)?)
        };
        let q = match m.q_lora_rank {
            Some(r) => QueryProj::LowRank {
                a: full(be, src, &p("q_a_proj.weight"), &[r, h])?,
                norm: norm_weight(be, src, &p("q_a_layernorm.weight"), r)?,
                b: by_heads(&p("q_b_proj.weight"), &[nh * qk, r], qk)?,
            },
            None => QueryProj::Full(by_heads(&p("q_proj.weight"), &[nh * qk, h], qk)?),
        };
        Ok(Self {
            q,
            kv_a: full(be, src, &p("kv_a_proj_with_mqa.weight"), &[m.kv_lora_rank + m.qk_rope_head_dim, h])?,
            kv_a_norm: norm_weight(be, src, &p("kv_a_layernorm.weight"), m.kv_lora_rank)?,
            absorb: absorbed(be, src, &p("kv_b_proj.weight"), &[nh * kvb, m.kv_lora_rank], (heads.start, heads.len()), (m.qk_nope_head_dim, m.v_head_dim))?,
            o_proj: RowParallelOProj::load(be, src, &p("o_proj.weight"), None, h, nh * m.v_head_dim, o_groups)?,
            m,
            heads: heads.len(),
            eps: cfg.rms_norm_eps as f32,
            softmax_scale: deepseek_softmax_mscale(cfg.rope_scaling.as_ref()) / (qk as f32).sqrt(),
        })
    }

    /// `h [rows, H]` (normed) → attention output projected to `[rows, H]`.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        be: &B,
        h: &Tensor<B>,
        batch: &StepBatch<B>,
        kv: &mut KvCache<B>,
        layer: usize,
        rope_table: &RopeTable<B>,
        o_counts: &[usize],
    ) -> Result<Tensor<B>, ModelError> {
        let (rows, nh, m) = (h.rows(), self.heads, &self.m);
        let (nope, rope, vd) = (m.qk_nope_head_dim, m.qk_rope_head_dim, m.v_head_dim);
        let qk = nope + rope;
        let q = match &self.q {
            QueryProj::LowRank { a, norm, b } => {
                let qa = linear(be, h, a, None)?;
                linear(be, &rms(be, &qa, norm, self.eps)?, b, None)?
            }
            QueryProj::Full(w) => linear(be, h, w, None)?,
        }; // [rows, nh·qk]
        let mut q = q.reshape(&[rows * nh, qk])?;
        rope_tail(be, &mut q, nope, rope, &batch.positions, nh, rope_table)?;
        let (l, d) = (m.kv_lora_rank, m.kv_lora_rank + rope);
        let ckv = linear(be, h, &self.kv_a, None)?; // [rows, L + rope]
        let act = be.activation_dtype();
        let mut latent = be.zeros(&[rows, l], act)?;
        be.copy_block(&ckv, &mut latent, Block::rows(0, 0, rows, l))?;
        let mut k_pe = be.zeros(&[rows, 1, rope], act)?;
        be.copy_block(&ckv, &mut k_pe, Block::at((0, l), (0, 0), rows, rope))?;
        be.rope(&mut k_pe, &batch.positions, rope_table)?;
        // The cache row: [normed latent, roped key], one per token.
        let c = rms(be, &latent, &self.kv_a_norm, self.eps)?;
        let mut entry = be.zeros(&[rows, 1, d], act)?;
        be.copy_block(&c, &mut entry, Block::rows(0, 0, rows, l))?;
        be.copy_block(&k_pe, &mut entry, Block::at((0, 0), (0, l), rows, rope))?;
        // Absorbed queries [rows, nh, L + rope]: W_UKᵀ q_nope, then q_pe.
        let q = q.reshape(&[rows, nh * qk])?;
        let mut qa = be.zeros(&[rows, nh * d], act)?;
        for (head, (uk_t, _)) in self.absorb.iter().enumerate() {
            let mut qn = be.zeros(&[rows, nope], act)?;
            be.copy_block(&q, &mut qn, Block::at((0, head * qk), (0, 0), rows, nope))?;
            let ql = linear(be, &qn, uk_t, None)?; // [rows, L]
            be.copy_block(&ql, &mut qa, Block::at((0, 0), (0, head * d), rows, l))?;
            be.copy_block(&q, &mut qa, Block::at((0, head * qk + nope), (0, head * d + l), rows, rope))?;
        }
        let qa = qa.reshape(&[rows, nh, d])?;
        let (kc, _) = kv.layer_mut(layer).ok_or_else(|| ModelError::Batch(format!("the KV cache has no layer {layer}")))?;
        let index = batch.kv_index();
        be.kv_cache_write(&entry, kc, &index)?;
        let params = AttentionParams { scale: self.softmax_scale, sliding_window: None };
        // Values are the cached rows themselves: each head's output's first L dims are Σ p·c.
        let mut y = be.zeros(&[rows, nh, d], act)?;
        be.kv_cache_attention(&qa, kc, kc, &index, &params, &mut y)?;
        let y = y.reshape(&[rows, nh * d])?;
        let mut attn = be.zeros(&[rows, nh * vd], act)?;
        for (head, (_, uv)) in self.absorb.iter().enumerate() {
            let mut yl = be.zeros(&[rows, l], act)?;
            be.copy_block(&y, &mut yl, Block::at((0, head * d), (0, 0), rows, l))?;
            let o = linear(be, &yl, uv, None)?; // [rows, vd]
            be.copy_block(&o, &mut attn, Block::at((0, 0), (0, head * vd), rows, vd))?;
        }
        Ok(self.o_proj.forward(be, &attn, o_counts)?)
    }

    pub fn weight_bytes(&self) -> (usize, usize) {
        let q = match &self.q {
            QueryProj::LowRank { a, norm, b } => a.size_in_bytes() + norm.size_in_bytes() + b.size_in_bytes(),
            QueryProj::Full(w) => w.size_in_bytes(),
        };
        let kv_b: usize = self.absorb.iter().map(|(a, b)| a.size_in_bytes() + b.size_in_bytes()).sum();
        (q + self.kv_a.size_in_bytes() + self.kv_a_norm.size_in_bytes() + kv_b, self.o_proj.weight_bytes())
    }
}

/// This rank's heads `start..start + n` of `kv_b [nh·(nope + vd), L]`, each read as its own
/// row ranges and split into `W_UKᵀ [L, nope]` (transposed on the host, in the stored float
/// dtype) and `W_UV [vd, L]`.
fn absorbed<B: Device>(be: &B, src: &dyn WeightSource, name: &str, shape: &[usize], (start, n): (usize, usize), (nope, vd): (usize, usize)) -> Result<Vec<Absorbed<B>>, ModelError> {
    src.expect_shape(name, shape)?;
    let (per, l) = (nope + vd, shape[1]);
    (start..start + n)
        .map(|h| {
            let uk = src.load(name, &ShardSpec::range(Axis::Rows, h * per, nope))?;
            let uv = src.load(name, &ShardSpec::range(Axis::Rows, h * per + nope, vd))?;
            Ok((be.upload(&transposed(&uk, nope, l)?)?, be.upload(&uv)?))
        })
        .collect()
}

/// `[rows, cols]` → `[cols, rows]`, same dtype.
fn transposed(t: &HostTensor, rows: usize, cols: usize) -> Result<HostTensor, ModelError> {
    fn tr<T: Copy>(v: &[T], rows: usize, cols: usize) -> Vec<T> {
        (0..cols * rows).map(|i| v[(i % rows) * cols + i / rows]).collect()
    }
    let data = match &t.data {
        HostData::F32(v) => HostData::F32(tr(v, rows, cols)),
        HostData::F16(v) => HostData::F16(tr(v, rows, cols)),
        HostData::BF16(v) => HostData::BF16(tr(v, rows, cols)),
        other => return Err(ModelError::Config(format!("kv_b_proj in {} cannot be transposed", other.dtype()))),
    };
    Ok(HostTensor::new(data, &[cols, rows])?)
}

/// RMSNorm into a new tensor.
pub fn rms<B: Device>(be: &B, x: &Tensor<B>, w: &Tensor<B>, eps: f32) -> Result<Tensor<B>, ModelError> {
    let mut y = be.zeros(x.shape(), x.dtype())?;
    be.rms_norm(x, w, eps, &mut y)?;
    Ok(y)
}

/// Applies RoPE to the last `rope` dims of each `[nope + rope]` head row of `q [rows·nh, qk]`.
/// DeepSeek's HF code de-interleaves before a NeoX rotation; applying it to q and k alike is the
/// interleaved rotation up to a fixed permutation of dims, which leaves q·k unchanged.
fn rope_tail<B: Device>(
    be: &B,
    q: &mut Tensor<B>,
    nope: usize,
    rope: usize,
    positions: &Tensor<B>,
    nh: usize,
    table: &RopeTable<B>,
) -> Result<(), ModelError> {
    let n = q.rows();
    let mut pe = be.zeros(&[n, rope], q.dtype())?;
    be.copy_block(q, &mut pe, Block::at((0, nope), (0, 0), n, rope))?;
    let mut pe = pe.reshape(&[n / nh.max(1), nh, rope])?;
    be.rope(&mut pe, positions, table)?;
    let pe = pe.reshape(&[n, rope])?;
    be.copy_block(&pe, q, Block::at((0, 0), (0, nope), n, rope))?;
    Ok(())
}
