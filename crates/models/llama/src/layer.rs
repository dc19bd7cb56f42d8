//! One decoder layer: attention (data-parallel across replicas, heads split by standard TP;
//! o_proj fine-grained) and the MLP (fine-grained).

use finetp_core::backend::{AttentionParams, DType, Device, RopeTable, Tensor};
use finetp_core::config::ModelConfig;
use finetp_core::decoder::{HeadShard, KvCache, ModelError, StepBatch, cached_attention};
use finetp_core::layers::{LayerGroups, ParallelMlp, RowParallelOProj, linear};
use finetp_core::shard::{Axis, ShardSpec, WeightSource};

/// q/k/v projections of this TP rank's heads (`[heads·hd, H]` row blocks, column-parallel)
/// with optional bias (Qwen2) and optional per-head norms (Qwen3, replicated).
struct Qkv<B: Device> {
    w: [Tensor<B>; 3],
    bias: Option<[Tensor<B>; 3]>,
    /// Per-head RMSNorm weights of q and k, `[head_dim]` each.
    norms: Option<[Tensor<B>; 2]>,
}

pub struct DecoderLayer<B: Device> {
    input_layernorm: Tensor<B>,
    post_attention_layernorm: Tensor<B>,
    qkv: Qkv<B>,
    /// This TP rank's query and KV heads.
    heads: HeadShard,
    o_proj: RowParallelOProj<B>,
    mlp: ParallelMlp<B>,
}

/// Per-step values every layer shares.
pub struct LayerStep<'a, B: Device> {
    pub rope: &'a RopeTable<B>,
    pub o_proj_counts: &'a [usize],
    pub mlp_counts: &'a [usize],
}

impl<B: Device> DecoderLayer<B> {
    pub fn load(
        be: &B,
        cfg: &ModelConfig,
        src: &dyn WeightSource,
        i: usize,
        (o_groups, mlp_groups): (LayerGroups<B>, LayerGroups<B>),
    ) -> Result<Self, ModelError> {
        let p = format!("model.layers.{i}");
        let (h, hd) = (cfg.hidden_size, cfg.head_dim);
        let (q_out, kv_out) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
        let heads = HeadShard::new(cfg.num_attention_heads, cfg.num_key_value_heads, o_groups.tp_rank(), o_groups.tp_size());
        let q_rows = ShardSpec::range(Axis::Rows, heads.q.start * hd, heads.q_heads() * hd);
        let kv_rows = ShardSpec::range(Axis::Rows, heads.kv.start * hd, heads.kv_heads() * hd);
        // Norm weights in f32 whatever the checkpoint stores, converted once here.
        let full = |name: String, shape: &[usize]| -> Result<Tensor<B>, ModelError> {
            src.expect_shape(&name, shape)?;
            Ok(be.upload(&src.load_full(&name)?.into_dtype(DType::F32)?)?)
        };
        let proj = |n: &str, out: usize, rows: &ShardSpec| -> Result<Tensor<B>, ModelError> {
            let name = format!("{p}.self_attn.{n}_proj.weight");
            src.expect_shape(&name, &[out, h])?;
            Ok(finetp_core::layers::upload_weight(be, src, &name, rows)?)
        };
        // Biases are f32 whatever the checkpoint stores (the contract's GEMM adds an f32 bias).
        let bias = |n: &str, out: usize, rows: &ShardSpec| -> Result<Tensor<B>, ModelError> {
            let name = format!("{p}.self_attn.{n}_proj.bias");
            src.expect_shape(&name, &[out])?;
            Ok(be.upload(&src.load(&name, rows)?.into_dtype(DType::F32)?)?)
        };
        let qkv = Qkv {
            w: [proj("q", q_out, &q_rows)?, proj("k", kv_out, &kv_rows)?, proj("v", kv_out, &kv_rows)?],
            bias: if cfg.qkv_bias {
                Some([bias("q", q_out, &q_rows)?, bias("k", kv_out, &kv_rows)?, bias("v", kv_out, &kv_rows)?])
            } else {
                None
            },
            norms: if cfg.qk_norm {
                Some([full(format!("{p}.self_attn.q_norm.weight"), &[hd])?, full(format!("{p}.self_attn.k_norm.weight"), &[hd])?])
            } else {
                None
            },
        };
        Ok(Self {
            input_layernorm: full(format!("{p}.input_layernorm.weight"), &[h])?,
            post_attention_layernorm: full(format!("{p}.post_attention_layernorm.weight"), &[h])?,
            qkv,
            heads,
            o_proj: RowParallelOProj::load(be, src, &format!("{p}.self_attn.o_proj.weight"), None, h, cfg.o_proj_in_features(), o_groups)?,
            mlp: ParallelMlp::load(be, src, &format!("{p}.mlp"), h, cfg.intermediate_size, mlp_groups)?,
        })
    }

    /// `x [rows, H]` (replicated over TP) → `x + attn + mlp`, pre-norm residual; attention on
    /// this TP rank's heads, its KV cache holding their keys and values.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        be: &B,
        cfg: &ModelConfig,
        layer: usize,
        mut x: Tensor<B>,
        batch: &StepBatch<B>,
        kv: &mut KvCache<B>,
        step: &LayerStep<'_, B>,
    ) -> Result<Tensor<B>, ModelError> {
        let rows = x.rows();
        let (nh, nkv, hd) = (self.heads.q_heads(), self.heads.kv_heads(), cfg.head_dim);
        let eps = cfg.rms_norm_eps as f32;
        let h = norm(be, &x, &self.input_layernorm, eps)?;
        let b = |i: usize| self.qkv.bias.as_ref().map(|b| &b[i]);
        let mut q = linear(be, &h, &self.qkv.w[0], b(0))?.reshape(&[rows, nh, hd])?;
        let mut k = linear(be, &h, &self.qkv.w[1], b(1))?.reshape(&[rows, nkv, hd])?;
        let v = linear(be, &h, &self.qkv.w[2], b(2))?.reshape(&[rows, nkv, hd])?;
        if let Some([qn, kn]) = &self.qkv.norms {
            q = norm(be, &q, qn, eps)?;
            k = norm(be, &k, kn, eps)?;
        }
        be.rope(&mut q, &batch.positions, step.rope)?;
        be.rope(&mut k, &batch.positions, step.rope)?;
        let params = AttentionParams { scale: 1.0 / (hd as f32).sqrt(), sliding_window: cfg.window_of_layer(layer).map(|w| u32::try_from(w).unwrap_or(u32::MAX)) };
        let attn = cached_attention(be, batch, kv, layer, (&q, &k, &v), &params)?;
        let o = self.o_proj.forward(be, &attn, step.o_proj_counts)?;
        be.add_assign(&mut x, &o)?;
        let h = norm(be, &x, &self.post_attention_layernorm, eps)?;
        let m = self.mlp.forward(be, h, step.mlp_counts)?;
        be.add_assign(&mut x, &m)?;
        Ok(x)
    }

    /// (attention incl. norms, o_proj, mlp) resident bytes.
    pub fn weight_bytes(&self) -> (usize, usize, usize) {
        let q = &self.qkv;
        let attn = q.w.iter().chain(q.bias.iter().flatten()).chain(q.norms.iter().flatten()).map(Tensor::size_in_bytes).sum::<usize>()
            + self.input_layernorm.size_in_bytes()
            + self.post_attention_layernorm.size_in_bytes();
        (attn, self.o_proj.weight_bytes(), self.mlp.weight_bytes())
    }
}

/// RMSNorm into a new tensor of the same shape.
pub fn norm<B: Device>(be: &B, x: &Tensor<B>, w: &Tensor<B>, eps: f32) -> Result<Tensor<B>, ModelError> {
    let mut y = be.zeros(x.shape(), x.dtype())?;
    be.rms_norm(x, w, eps, &mut y)?;
    Ok(y)
}
