//! The whole DeepSeek-V2/V3 model on one rank.

use finetp_core::backend::{Device, RopeStyle, RopeTable, Tensor};
use finetp_core::config::{Component, ModelConfig};
use finetp_core::decoder::{CausalLm, KvCache, KvLayout, ModelError, ModuleBytes, StepBatch, logit_rows, rope_table};
use finetp_core::layers::{ParallelLmHead, ParallelMlp, VocabParallelEmbedding};
use finetp_core::parallel::GroupSet;
use finetp_core::shard::WeightSource;

use crate::mla::{Mla, norm_weight, rms};
use crate::moe::Moe;

enum Ffn<B: Device> {
    /// Layers `< first_k_dense_replace`: fine-grained MLP TP applies.
    Dense(ParallelMlp<B>),
    Moe(Moe<B>),
}

struct Layer<B: Device> {
    input_ln: Tensor<B>,
    post_ln: Tensor<B>,
    attn: Mla<B>,
    ffn: Ffn<B>,
}

pub struct Deepseek<B: Device> {
    cfg: ModelConfig,
    groups: GroupSet<B>,
    embed: VocabParallelEmbedding<B>,
    layers: Vec<Layer<B>>,
    norm: Tensor<B>,
    lm_head: ParallelLmHead<B>,
    /// RoPE of the rope part (`qk_rope_head_dim` dims; interleaved pairs unless the config says
    /// `rope_interleave: false`), scaled as the config says.
    rope: RopeTable<B>,
}

impl<B: Device> Deepseek<B> {
    /// Loads a DeepSeek-V2 or -V3 checkpoint (routing as its config says).
    pub fn load(be: &B, cfg: &ModelConfig, src: &dyn WeightSource, groups: &GroupSet<B>) -> Result<Self, ModelError> {
        if !cfg.architecture.is_deepseek() {
            return Err(ModelError::Config(format!("{} is not a DeepSeek-V2/V3 model", cfg.architecture)));
        }
        let (v, h) = (cfg.vocab_size, cfg.hidden_size);
        cfg.validate_tensor_parallel(groups.tp.info().size()).map_err(|e| ModelError::Config(e.to_string()))?;
        let embed = VocabParallelEmbedding::load(be, src, "model.embed_tokens.weight", v, h, groups.layer(Component::Embedding))?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let p = format!("model.layers.{i}");
                let ffn = if cfg.is_moe_layer(i) {
                    Ffn::Moe(Moe::load(be, cfg, src, &format!("{p}.mlp"), groups.tp.clone(), groups.ep.clone())?)
                } else {
                    Ffn::Dense(ParallelMlp::load(be, src, &format!("{p}.mlp"), h, cfg.intermediate_size, groups.layer(Component::Mlp))?)
                };
                Ok(Layer {
                    input_ln: norm_weight(be, src, &format!("{p}.input_layernorm.weight"), h)?,
                    post_ln: norm_weight(be, src, &format!("{p}.post_attention_layernorm.weight"), h)?,
                    attn: Mla::load(be, cfg, src, &format!("{p}.self_attn"), groups.layer(Component::OProj))?,
                    ffn,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let lm_head = if cfg.tie_word_embeddings && groups.embedding.info().size() == groups.lm_head.info().size() {
            ParallelLmHead::tied(embed.shard(), v, groups.layer(Component::LmHead))?
        } else {
            let name = if cfg.tie_word_embeddings { "model.embed_tokens.weight" } else { "lm_head.weight" };
            ParallelLmHead::load(be, src, name, v, h, groups.layer(Component::LmHead))?
        };
        let rope = cfg.mla.map_or(cfg.head_dim, |m| m.qk_rope_head_dim);
        let style = if cfg.mla.is_none_or(|m| m.rope_interleave) { RopeStyle::Interleaved } else { RopeStyle::Neox };
        Ok(Self {
            cfg: cfg.clone(),
            groups: groups.clone(),
            embed,
            layers,
            norm: norm_weight(be, src, "model.norm.weight", h)?,
            lm_head,
            rope: rope_table(be, cfg.rope_theta, rope, style, cfg.rope_scaling.as_ref())?,
        })
    }

    fn counts(&self, c: Component, batch: &StepBatch<B>) -> Vec<usize> {
        let counts = if c == Component::LmHead { &batch.logit_counts } else { &batch.token_counts };
        counts.for_group(self.groups.get(c).info())
    }
}

impl<B: Device> CausalLm<B> for Deepseek<B> {
    fn forward(&self, be: &B, batch: &StepBatch<B>, kv: &mut KvCache<B>) -> Result<Tensor<B>, ModelError> {
        let eps = self.cfg.rms_norm_eps as f32;
        let (o_counts, mlp_counts) = (self.counts(Component::OProj, batch), self.counts(Component::Mlp, batch));
        let mut x = self.embed.forward(be, &batch.ids, &self.counts(Component::Embedding, batch))?;
        for (i, l) in self.layers.iter().enumerate() {
            let a = l.attn.forward(be, &rms(be, &x, &l.input_ln, eps)?, batch, kv, i, &self.rope, &o_counts)?;
            be.add_assign(&mut x, &a)?;
            let h = rms(be, &x, &l.post_ln, eps)?;
            let f = match &l.ffn {
                Ffn::Dense(m) => m.forward(be, h, &mlp_counts)?,
                Ffn::Moe(m) => m.forward(be, &h)?,
            };
            be.add_assign(&mut x, &f)?;
        }
        let x = rms(be, &x, &self.norm, eps)?;
        let sel = logit_rows(be, batch, &x)?;
        Ok(self.lm_head.forward(be, sel, &self.counts(Component::LmHead, batch))?)
    }

    fn new_kv_cache(&self, be: &B, layout: KvLayout) -> Result<KvCache<B>, ModelError> {
        let m = self.cfg.mla.ok_or_else(|| ModelError::Config("no MLA config".into()))?;
        Ok(KvCache::latent(be, self.cfg.num_hidden_layers, layout, m.kv_lora_rank + m.qk_rope_head_dim)?)
    }

    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }

    fn weight_bytes(&self) -> Vec<ModuleBytes> {
        let (mut attn, mut o, mut dense, mut moe) = (self.norm.size_in_bytes(), 0, 0, 0);
        for l in &self.layers {
            let (a, b) = l.attn.weight_bytes();
            attn += a + l.input_ln.size_in_bytes() + l.post_ln.size_in_bytes();
            o += b;
            match &l.ffn {
                Ffn::Dense(m) => dense += m.weight_bytes(),
                Ffn::Moe(m) => moe += m.weight_bytes(),
            }
        }
        let lm_head = if self.lm_head.is_shared() { 0 } else { self.lm_head.weight_bytes() };
        vec![
            ModuleBytes { module: "embedding", bytes: self.embed.weight_bytes() },
            ModuleBytes { module: "lm_head", bytes: lm_head },
            ModuleBytes { module: "attention (MLA, norms)", bytes: attn },
            ModuleBytes { module: "o_proj", bytes: o },
            ModuleBytes { module: "dense mlp", bytes: dense },
            ModuleBytes { module: "moe experts", bytes: moe },
        ]
    }
}
