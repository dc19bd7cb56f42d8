//! The whole Llama-family model on one rank.

use finetp_core::backend::{DType, Device, RopeStyle, RopeTable, Tensor};
use finetp_core::config::{Architecture, Component, ModelConfig};
use finetp_core::decoder::{CausalLm, HeadShard, KvCache, KvLayout, ModelError, ModuleBytes, StepBatch, logit_rows, rope_table};
use finetp_core::layers::{ParallelLmHead, VocabParallelEmbedding};
use finetp_core::parallel::GroupSet;
use finetp_core::shard::WeightSource;

use crate::layer::{DecoderLayer, LayerStep, norm};

pub struct Llama<B: Device> {
    cfg: ModelConfig,
    groups: GroupSet<B>,
    embed: VocabParallelEmbedding<B>,
    layers: Vec<DecoderLayer<B>>,
    norm: Tensor<B>,
    lm_head: ParallelLmHead<B>,
    /// NeoX-style RoPE over the whole head, scaled as the config says.
    rope: RopeTable<B>,
}

impl<B: Device> Llama<B> {
    /// Loads this rank's weights: attention of its TP rank's heads, replicated norms, and its
    /// shard of each fine-grained component (the layers derive their own slices from their
    /// groups).
    pub fn load(be: &B, cfg: &ModelConfig, src: &dyn WeightSource, groups: &GroupSet<B>) -> Result<Self, ModelError> {
        if !matches!(cfg.architecture, Architecture::Llama | Architecture::Mistral | Architecture::Qwen2 | Architecture::Qwen3) {
            return Err(ModelError::Config(format!("{} is not a Llama-family model", cfg.architecture)));
        }
        let (v, h) = (cfg.vocab_size, cfg.hidden_size);
        cfg.validate_tensor_parallel(groups.tp.info().size()).map_err(|e| ModelError::Config(e.to_string()))?;
        let embed = VocabParallelEmbedding::load(be, src, "model.embed_tokens.weight", v, h, groups.layer(Component::Embedding))?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::load(be, cfg, src, i, (groups.layer(Component::OProj), groups.layer(Component::Mlp))))
            .collect::<Result<Vec<_>, _>>()?;
        src.expect_shape("model.norm.weight", &[h])?;
        let norm = be.upload(&src.load_full("model.norm.weight")?.into_dtype(DType::F32)?)?;
        let same_layout = groups.embedding.info().size() == groups.lm_head.info().size();
        let lm_head = match (cfg.tie_word_embeddings, same_layout) {
            (true, true) => ParallelLmHead::tied(embed.shard(), v, groups.layer(Component::LmHead))?,
            // Tied, but a different group size: a second shard of the same checkpoint tensor.
            (true, false) => ParallelLmHead::load(be, src, "model.embed_tokens.weight", v, h, groups.layer(Component::LmHead))?,
            (false, _) => ParallelLmHead::load(be, src, "lm_head.weight", v, h, groups.layer(Component::LmHead))?,
        };
        Ok(Self {
            cfg: cfg.clone(),
            groups: groups.clone(),
            embed,
            layers,
            norm,
            lm_head,
            rope: rope_table(be, cfg.rope_theta, cfg.head_dim, RopeStyle::Neox, cfg.rope_scaling.as_ref())?,
        })
    }

    fn counts(&self, c: Component, batch: &StepBatch<B>) -> Vec<usize> {
        let counts = if c == Component::LmHead { &batch.logit_counts } else { &batch.token_counts };
        counts.for_group(self.groups.get(c).info())
    }
}

impl<B: Device> CausalLm<B> for Llama<B> {
    fn forward(&self, be: &B, batch: &StepBatch<B>, kv: &mut KvCache<B>) -> Result<Tensor<B>, ModelError> {
        let o_proj_counts = self.counts(Component::OProj, batch);
        let mlp_counts = self.counts(Component::Mlp, batch);
        let step = LayerStep { rope: &self.rope, o_proj_counts: &o_proj_counts, mlp_counts: &mlp_counts };
        let mut x = self.embed.forward(be, &batch.ids, &self.counts(Component::Embedding, batch))?; // [rows, H]
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(be, &self.cfg, i, x, batch, kv, &step)?;
        }
        let x = norm(be, &x, &self.norm, self.cfg.rms_norm_eps as f32)?;
        let sel = logit_rows(be, batch, &x)?; // [M, H]
        Ok(self.lm_head.forward(be, sel, &self.counts(Component::LmHead, batch))?) // [M, V]
    }

    fn new_kv_cache(&self, be: &B, layout: KvLayout) -> Result<KvCache<B>, ModelError> {
        let c = &self.cfg;
        let tp = self.groups.tp.info();
        let kv_heads = HeadShard::new(c.num_attention_heads, c.num_key_value_heads, tp.rank, tp.size()).kv_heads();
        Ok(KvCache::new(be, c.num_hidden_layers, layout, (kv_heads, c.head_dim), c.head_dim)?)
    }

    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }

    fn weight_bytes(&self) -> Vec<ModuleBytes> {
        let (mut attn, mut o, mut mlp) = (0, 0, 0);
        for l in &self.layers {
            let (a, b, c) = l.weight_bytes();
            (attn, o, mlp) = (attn + a, o + b, mlp + c);
        }
        let lm_head = if self.lm_head.is_shared() { 0 } else { self.lm_head.weight_bytes() };
        vec![
            ModuleBytes { module: "embedding", bytes: self.embed.weight_bytes() },
            ModuleBytes { module: "lm_head", bytes: lm_head },
            ModuleBytes { module: "attention (q/kv, norms)", bytes: attn + self.norm.size_in_bytes() },
            ModuleBytes { module: "o_proj", bytes: o },
            ModuleBytes { module: "mlp", bytes: mlp },
        ]
    }
}
