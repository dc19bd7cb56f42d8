//! Multi-head latent attention with a fine-grained o_proj.

use finetp_core::backend::{AttentionParams, Block, DType, Device, RopeTable, Tensor};
use finetp_core::config::{MlaConfig, ModelConfig};
use finetp_core::decoder::{HeadShard, KvCache, ModelError, StepBatch, cached_attention, deepseek_softmax_mscale};
use finetp_core::layers::{LayerGroups, RowParallelOProj, linear};
use finetp_core::shard::{Axis, ShardSpec, WeightSource};

/// Query path: low-rank (`q_a_proj` → norm → `q_b_proj`) or a plain `q_proj`.
enum QueryProj<B: Device> {
    LowRank { a: Tensor<B>, norm: Tensor<B>, b: Tensor<B> },
    Full(Tensor<B>),
}

pub struct Mla<B: Device> {
    q: QueryProj<B>,
    /// `[kv_lora_rank + qk_rope_head_dim, H]`.
    kv_a: Tensor<B>,
    kv_a_norm: Tensor<B>,
    /// `[nh · (qk_nope + v), kv_lora_rank]`.
    kv_b: Tensor<B>,
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
            kv_b: by_heads(&p("kv_b_proj.weight"), &[nh * kvb, m.kv_lora_rank], kvb)?,
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
        let ckv = linear(be, h, &self.kv_a, None)?; // [rows, kv_lora + rope]
        let act = be.activation_dtype();
        let mut latent = be.zeros(&[rows, m.kv_lora_rank], act)?;
        be.copy_block(&ckv, &mut latent, Block::rows(0, 0, rows, m.kv_lora_rank))?;
        let mut k_pe = be.zeros(&[rows, 1, rope], act)?;
        be.copy_block(&ckv, &mut k_pe, Block::at((0, m.kv_lora_rank), (0, 0), rows, rope))?;
        be.rope(&mut k_pe, &batch.positions, rope_table)?;
        let kvb = linear(be, &rms(be, &latent, &self.kv_a_norm, self.eps)?, &self.kv_b, None)?.reshape(&[rows * nh, nope + vd])?;
        let mut k = be.zeros(&[rows * nh, qk], act)?;
        be.copy_block(&kvb, &mut k, Block::rows(0, 0, rows * nh, nope))?;
        let mut k = k.reshape(&[rows, nh * qk])?;
        for head in 0..nh {
            be.copy_block(&k_pe, &mut k, Block::at((0, 0), (0, head * qk + nope), rows, rope))?; // shared rope key
        }
        let mut v = be.zeros(&[rows * nh, vd], act)?;
        be.copy_block(&kvb, &mut v, Block::at((0, nope), (0, 0), rows * nh, vd))?;
        let (q, k, v) = (q.reshape(&[rows, nh, qk])?, k.reshape(&[rows, nh, qk])?, v.reshape(&[rows, nh, vd])?);
        let params = AttentionParams { scale: self.softmax_scale, sliding_window: None };
        let attn = cached_attention(be, batch, kv, layer, (&q, &k, &v), &params)?;
        Ok(self.o_proj.forward(be, &attn, o_counts)?)
    }

    pub fn weight_bytes(&self) -> (usize, usize) {
        let q = match &self.q {
            QueryProj::LowRank { a, norm, b } => a.size_in_bytes() + norm.size_in_bytes() + b.size_in_bytes(),
            QueryProj::Full(w) => w.size_in_bytes(),
        };
        (q + self.kv_a.size_in_bytes() + self.kv_a_norm.size_in_bytes() + self.kv_b.size_in_bytes(), self.o_proj.weight_bytes())
    }
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
