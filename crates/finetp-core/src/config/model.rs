//! The model shapes fine-grained TP needs, read from a Hugging Face `config.json`.
//!
//! Field names are HF's own (llama, mistral, qwen2, qwen3, deepseek_v2, deepseek_v3); MLA and MoE
//! fields are read in `deepseek.rs`.

use std::path::Path;

use serde_json::{Map, Value};

use super::deepseek::{mla, moe};
use super::fields::Fields;
use super::{Architecture, Component, MlaConfig, ModelConfigError, MoeConfig, ParallelConfig, RopeScaling};

/// vLLM pads the vocabulary of the embedding and lm_head to a multiple of this
/// (`DEFAULT_VOCAB_PADDING_SIZE`).
pub const VOCAB_PADDING: usize = 64;

/// The largest single size a config may give (vocabularies reach 256k, contexts 10M).
pub const MAX_DIMENSION: usize = 1 << 24;

/// The most weights a config may describe: 2^44, some 17.6 trillion (DeepSeek-R1 has 671
/// billion). Products of sizes up to this fit `u64` with room for bytes per weight.
pub const MAX_PARAMETERS: u64 = 1 << 44;

/// Rounds `vocab` up as vLLM's `pad_vocab_size` does.
pub const fn pad_vocab(vocab: usize) -> usize {
    vocab.div_ceil(VOCAB_PADDING) * VOCAB_PADDING
}

/// The parts of a HF `config.json` that shape weights, memory and fine-grained TP.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    /// Intermediate size of the dense MLPs.
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub tie_word_embeddings: bool,
    /// Bias on q/k/v projections (Qwen2 always; Llama when `attention_bias`).
    pub qkv_bias: bool,
    /// RMSNorm on q and k per head (Qwen3).
    pub qk_norm: bool,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    /// Attention sees only the last `w` positions (Mistral's `sliding_window`; Qwen's when
    /// `use_sliding_window`); `None`: full causal attention.
    pub sliding_window: Option<usize>,
    /// The first layer the window applies to (0 for Mistral; Qwen's `max_window_layers`, as
    /// HF's `layer_types`: layers below it attend fully).
    pub sliding_window_from_layer: usize,
    /// The RoPE scaling scheme the config names (`rope_scaling`, or `rope_parameters`), other
    /// than the default; one finetp does not know is refused when the config is read.
    pub rope_scaling: Option<RopeScaling>,
    pub mla: Option<MlaConfig>,
    pub moe: Option<MoeConfig>,
}

/// Refuses `partial_rotary_factor` other than 1 (top level, or in transformers 5's
/// `rope_parameters`): finetp's Llama-family attention rotates every dimension of each head, and
/// running such a checkpoint so would be silently wrong. (DeepSeek's MLA rotates its own
/// `qk_rope_head_dim` part and is not read here.)
fn refuse_partial_rotary(m: &Map<String, Value>) -> Result<(), ModelConfigError> {
    let nested = m.get("rope_parameters").and_then(|p| p.get("partial_rotary_factor"));
    for v in [m.get("partial_rotary_factor"), nested].into_iter().flatten().filter(|v| !v.is_null()) {
        match v.as_f64() {
            Some(1.0) => {}
            Some(f) => {
                return Err(ModelConfigError::Field {
                    field: "partial_rotary_factor",
                    detail: format!("{f}: rotating only part of each head is not supported; refused rather than rotating the whole head"),
                });
            }
            None => return Err(ModelConfigError::Field { field: "partial_rotary_factor", detail: format!("expected a number, got {v}") }),
        }
    }
    Ok(())
}

impl ModelConfig {
    /// Reads `config.json` from a file, or from `dir/config.json` when given a directory.
    pub fn from_path(path: &Path) -> Result<Self, ModelConfigError> {
        let file = if path.is_dir() { path.join("config.json") } else { path.to_path_buf() };
        let text = std::fs::read_to_string(&file)
            .map_err(|e| ModelConfigError::File { path: file.display().to_string(), message: e.to_string() })?;
        Self::from_json_str(&text).map_err(|e| match e {
            ModelConfigError::Json { message, line, column, .. } => {
                ModelConfigError::Json { path: file.display().to_string(), message, line, column }
            }
            other => other,
        })
    }

    /// Parses the text of a `config.json`.
    pub fn from_json_str(text: &str) -> Result<Self, ModelConfigError> {
        let v: Value = serde_json::from_str(text).map_err(|e| ModelConfigError::Json {
            path: "<string>".into(),
            message: super::finegrained::strip_position(&e.to_string()),
            line: e.line(),
            column: e.column(),
        })?;
        let Value::Object(m) = v else {
            return Err(ModelConfigError::Field { field: "<root>", detail: "config.json must be a JSON object".into() });
        };
        Self::from_map(&m)
    }

    fn from_map(m: &Map<String, Value>) -> Result<Self, ModelConfigError> {
        let f = Fields(m);
        let classes: Vec<&str> = match m.get("architectures") {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let architecture = Architecture::from_hf(&classes, f.opt_string("model_type")?.as_deref())?;
        let hidden_size = f.usize("hidden_size")?;
        let num_attention_heads = f.usize("num_attention_heads")?;
        let default_head_dim = hidden_size / num_attention_heads.max(1);
        let rope_theta = match f.opt_f64("rope_theta")? {
            Some(t) => t,
            // transformers 5 nests it under rope_parameters.
            None => m
                .get("rope_parameters")
                .and_then(|p| p.get("rope_theta"))
                .and_then(Value::as_f64)
                .unwrap_or(10000.0),
        };
        let mla = if architecture.is_deepseek() { Some(mla(&f)?) } else { None };
        let moe = if architecture.is_deepseek() { moe(&f, architecture)? } else { None };
        let sliding_window_from_layer = match architecture {
            Architecture::Qwen2 | Architecture::Qwen3 => f.opt_usize("max_window_layers")?.unwrap_or(28),
            _ => 0,
        };
        if !architecture.is_deepseek() {
            refuse_partial_rotary(m)?;
        }
        let max_position_embeddings = f.opt_usize("max_position_embeddings")?;
        let rope_scaling = RopeScaling::from_config(m, max_position_embeddings)?;
        let sliding_window = match architecture {
            Architecture::Mistral => f.opt_usize("sliding_window")?,
            Architecture::Qwen2 | Architecture::Qwen3 if f.opt_bool("use_sliding_window")?.unwrap_or(false) => f.opt_usize("sliding_window")?,
            _ => None,
        };
        let cfg = Self {
            architecture,
            vocab_size: f.usize("vocab_size")?,
            hidden_size,
            intermediate_size: f.usize("intermediate_size")?,
            num_hidden_layers: f.usize("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads: f.opt_usize("num_key_value_heads")?.unwrap_or(num_attention_heads),
            head_dim: f.opt_usize("head_dim")?.unwrap_or(default_head_dim),
            tie_word_embeddings: f.opt_bool("tie_word_embeddings")?.unwrap_or(false),
            qkv_bias: architecture == Architecture::Qwen2 || f.opt_bool("attention_bias")?.unwrap_or(false),
            qk_norm: architecture == Architecture::Qwen3,
            rms_norm_eps: f.opt_f64("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta,
            max_position_embeddings: max_position_embeddings.unwrap_or(4096),
            sliding_window,
            sliding_window_from_layer,
            rope_scaling,
            mla,
            moe,
        };
        cfg.check_consistency()?;
        Ok(cfg)
    }

    fn check_consistency(&self) -> Result<(), ModelConfigError> {
        for (field, v, positive) in self.sizes() {
            if positive && v == 0 {
                return Err(ModelConfigError::Field { field, detail: "must be > 0".into() });
            }
        }
        self.check_bounds()?;
        if self.sliding_window == Some(0) {
            return Err(ModelConfigError::Field { field: "sliding_window", detail: "must be > 0 (or null for full attention)".into() });
        }
        if !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return Err(ModelConfigError::Field {
                field: "num_key_value_heads",
                detail: format!(
                    "{} does not divide num_attention_heads {}",
                    self.num_key_value_heads, self.num_attention_heads
                ),
            });
        }
        Ok(())
    }

    /// Every size within [`MAX_DIMENSION`] and the weights within [`MAX_PARAMETERS`], so that
    /// no product of sizes later (memory plan, shards, buffers) can overflow: a config from a
    /// file is refused here instead.
    fn check_bounds(&self) -> Result<(), ModelConfigError> {
        for (field, v, _) in self.sizes() {
            if v > MAX_DIMENSION {
                return Err(ModelConfigError::Field { field, detail: format!("{v} is more than {MAX_DIMENSION}, beyond any model finetp loads") });
            }
        }
        match self.parameter_bound() {
            Some(n) if n <= MAX_PARAMETERS => Ok(()),
            n => Err(ModelConfigError::Field {
                field: "<sizes>",
                detail: format!(
                    "the sizes describe {} weights, more than the {MAX_PARAMETERS} finetp plans for",
                    n.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string())
                ),
            }),
        }
    }

    /// Every size the config gives, and whether it must be positive.
    fn sizes(&self) -> Vec<(&'static str, usize, bool)> {
        let mut sizes = vec![
            ("vocab_size", self.vocab_size, true),
            ("hidden_size", self.hidden_size, true),
            ("intermediate_size", self.intermediate_size, false),
            ("num_hidden_layers", self.num_hidden_layers, true),
            ("num_attention_heads", self.num_attention_heads, true),
            ("num_key_value_heads", self.num_key_value_heads, true),
            ("head_dim", self.head_dim, true),
            ("max_position_embeddings", self.max_position_embeddings, true),
            ("sliding_window", self.sliding_window.unwrap_or(0), false),
        ];
        if let Some(m) = self.mla {
            let q = m.q_lora_rank.unwrap_or(0);
            sizes.extend([("q_lora_rank", q, false), ("kv_lora_rank", m.kv_lora_rank, false), ("qk_nope_head_dim", m.qk_nope_head_dim, false)]);
            sizes.extend([("qk_rope_head_dim", m.qk_rope_head_dim, false), ("v_head_dim", m.v_head_dim, false)]);
        }
        if let Some(m) = self.moe {
            sizes.extend([("n_routed_experts", m.n_routed_experts, false), ("n_shared_experts", m.n_shared_experts, false)]);
            sizes.extend([("moe_intermediate_size", m.moe_intermediate_size, false), ("num_experts_per_tok", m.num_experts_per_tok, false)]);
        }
        sizes
    }

    /// An upper bound of the weight count the sizes describe (every projection of every layer,
    /// dense and MoE, both vocabulary tables), or `None` when it overflows `u64`.
    fn parameter_bound(&self) -> Option<u64> {
        let u = |v: usize| v as u64;
        let mul = |xs: &[u64]| xs.iter().try_fold(1u64, |a, &x| a.checked_mul(x));
        let (h, heads, kv, hd) = (u(self.hidden_size), u(self.num_attention_heads), u(self.num_key_value_heads), u(self.head_dim));
        let attention = mul(&[h, heads.checked_add(kv)?, hd, 2])?;
        let mlp = mul(&[h, u(self.intermediate_size), 3])?;
        let mla = match self.mla {
            None => 0,
            Some(m) => {
                let (q, c, nope, rope, v) = (u(m.q_lora_rank.unwrap_or(0)), u(m.kv_lora_rank), u(m.qk_nope_head_dim), u(m.qk_rope_head_dim), u(m.v_head_dim));
                let head = nope.checked_add(rope)?.checked_add(v)?;
                mul(&[h.checked_add(heads)?, q.checked_add(c)?.checked_add(rope)?.checked_add(h)?, head.max(1)])?
            }
        };
        let moe = match self.moe {
            None => 0,
            Some(m) => mul(&[u(m.n_routed_experts).checked_add(u(m.n_shared_experts))?.checked_add(1)?, h, u(m.moe_intermediate_size).max(1), 3])?,
        };
        let layer = attention.checked_add(mlp)?.checked_add(mla)?.checked_add(moe)?;
        mul(&[u(self.num_hidden_layers), layer])?.checked_add(mul(&[u(self.vocab_size), h, 2])?)
    }

    /// Vocabulary rows of the embedding and lm_head after vLLM's padding.
    pub fn padded_vocab(&self) -> usize {
        pad_vocab(self.vocab_size)
    }

    /// Input width of o_proj: `num_heads × v_head_dim` (MLA) or `num_heads × head_dim`.
    pub fn o_proj_in_features(&self) -> usize {
        let per_head = self.mla.map_or(self.head_dim, |m| m.v_head_dim);
        self.num_attention_heads * per_head
    }

    /// The attention window of layer `i` (`None`: full causal attention).
    pub fn window_of_layer(&self, i: usize) -> Option<usize> {
        self.sliding_window.filter(|_| i >= self.sliding_window_from_layer)
    }

    /// True when layer `i`'s feed-forward is a mixture of experts (vLLM-Ascend's `is_moe_layer`).
    pub fn is_moe_layer(&self, i: usize) -> bool {
        self.moe.is_some_and(|m| i >= m.first_k_dense_replace && i.is_multiple_of(m.moe_layer_freq))
    }

    /// Number of layers with a dense MLP: the layers MLP TP applies to.
    pub fn dense_mlp_layers(&self) -> usize {
        (0..self.num_hidden_layers).filter(|&i| !self.is_moe_layer(i)).count()
    }

    /// Checks every component's size against the model's shapes, before any weight is loaded.
    ///
    /// Tied embeddings with different embedding and lm_head sizes are *handled*, not rejected:
    /// the two are then loaded as separate shards of the same checkpoint tensor.
    ///
    /// # Errors
    /// [`ModelConfigError::ShapeNotDivisible`] naming the component, its size and the dimension.
    pub fn validate_parallel(&self, p: &ParallelConfig) -> Result<(), ModelConfigError> {
        self.validate_tensor_parallel(p.tensor_parallel_size)?;
        let tp = p.tensor_parallel_size;
        let checks: [(Component, &'static str, usize, bool); 4] = [
            (Component::Embedding, "padded vocabulary", self.padded_vocab(), true),
            (Component::LmHead, "padded vocabulary", self.padded_vocab(), true),
            (Component::OProj, "o_proj input width (num_heads x v_head_dim)", self.o_proj_in_features(), true),
            (Component::Mlp, "dense MLP intermediate_size", self.intermediate_size, self.dense_mlp_layers() > 0),
        ];
        for (component, what, value, applies) in checks {
            let size = p.size(component);
            if applies && !value.is_multiple_of(size) {
                return Err(ModelConfigError::ShapeNotDivisible {
                    component,
                    key: component.config_key(),
                    size,
                    what,
                    value,
                });
            }
            // Standard TP splits the component first, the fine-grained group each TP part again.
            if applies && tp > 1 && size > 1 && !value.is_multiple_of(size * tp) {
                return Err(ModelConfigError::TpShapeNotDivisible { component, key: component.config_key(), size, tp, what, value });
            }
        }
        Ok(())
    }

    /// The rules standard TP of size `tp` imposes (vLLM's): attention heads split evenly; KV
    /// heads split evenly, or replicated when TP exceeds them (each TP rank then holds the one
    /// KV head its query heads share); every TP-sharded width divisible by `tp`.
    ///
    /// # Errors
    /// [`ModelConfigError::TensorParallelNotDivisible`] naming the dimension and the rule.
    pub fn validate_tensor_parallel(&self, tp: usize) -> Result<(), ModelConfigError> {
        if tp <= 1 {
            return Ok(());
        }
        let fail = |what, value, rule| Err(ModelConfigError::TensorParallelNotDivisible { tp, what, value, rule });
        if !self.num_attention_heads.is_multiple_of(tp) {
            return fail("num_attention_heads", self.num_attention_heads, "each TP rank runs the same number of attention heads");
        }
        let kv = self.num_key_value_heads;
        if self.mla.is_none() && !kv.is_multiple_of(tp) && !tp.is_multiple_of(kv) {
            return fail("num_key_value_heads", kv, "KV heads are split evenly, or replicated when TP is a multiple of them");
        }
        let widths = [
            ("padded vocabulary", self.padded_vocab(), true),
            ("dense MLP intermediate_size", self.intermediate_size, self.dense_mlp_layers() > 0),
            ("moe_intermediate_size", self.moe.map_or(0, |m| m.moe_intermediate_size), self.moe.is_some()),
        ];
        for (what, value, applies) in widths {
            if applies && !value.is_multiple_of(tp) {
                return fail(what, value, "every TP rank holds an equal share of it");
            }
        }
        Ok(())
    }

    /// True when the embedding and lm_head share one checkpoint tensor *and* one shard layout,
    /// so a rank holds the shard once.
    pub fn shares_embedding_shard(&self, p: &ParallelConfig) -> bool {
        self.tie_word_embeddings && p.size(Component::Embedding) == p.size(Component::LmHead)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FinegrainedTpConfig;

    const DEEPSEEK_R1: &str = include_str!("../../tests/data/deepseek-r1.config.json");

    #[test]
    fn reads_deepseek_r1() {
        let c = ModelConfig::from_json_str(DEEPSEEK_R1).unwrap();
        assert_eq!(c.architecture, Architecture::DeepseekV3);
        assert_eq!(c.padded_vocab(), 129280);
        assert_eq!(c.o_proj_in_features(), 128 * 128);
        assert_eq!(c.dense_mlp_layers(), 3);
        assert!(c.is_moe_layer(3) && !c.is_moe_layer(2));
        assert_eq!(c.mla.unwrap().q_lora_rank, Some(1536));
    }

    #[test]
    fn shape_rules_name_component_and_dimension() {
        let c = ModelConfig::from_json_str(DEEPSEEK_R1).unwrap();
        // vocab 129280 = 2^7 * 1010: size 24 would not divide, as research §1.2 notes; use DP 48.
        let p = ParallelConfig::new(48, 1, 1, true, FinegrainedTpConfig { lm_head: Some(24), ..Default::default() }).unwrap();
        let e = c.validate_parallel(&p).unwrap_err();
        assert!(matches!(e, ModelConfigError::ShapeNotDivisible { component: Component::LmHead, size: 24, value: 129280, .. }));
        let p = ParallelConfig::new(32, 1, 1, true, FinegrainedTpConfig::uniform(8)).unwrap();
        c.validate_parallel(&p).unwrap();
    }

    #[test]
    fn tensor_parallel_rules_for_heads_and_kv_heads() {
        let c = |heads: usize, kv: usize| {
            ModelConfig::from_json_str(&format!(
                r#"{{"model_type":"llama","vocab_size":128,"hidden_size":96,"intermediate_size":96,"num_hidden_layers":1,"num_attention_heads":{heads},"num_key_value_heads":{kv}}}"#
            ))
            .unwrap()
        };
        assert!(c(8, 4).validate_tensor_parallel(8).is_ok(), "TP a multiple of the KV heads: replicated");
        assert!(c(12, 4).validate_tensor_parallel(2).is_ok());
        let e = c(12, 4).validate_tensor_parallel(6).unwrap_err();
        assert!(matches!(e, ModelConfigError::TensorParallelNotDivisible { what: "num_key_value_heads", value: 4, tp: 6, .. }), "{e}");
        let e = c(12, 4).validate_tensor_parallel(8).unwrap_err();
        assert!(e.to_string().contains("--tensor-parallel-size 8 does not divide the model's num_attention_heads (12)"), "{e}");
    }

    #[test]
    fn missing_field_is_named() {
        let e = ModelConfig::from_json_str(r#"{"model_type":"llama","hidden_size":64}"#).unwrap_err();
        assert!(e.to_string().contains("num_attention_heads"), "{e}");
        let e = ModelConfig::from_json_str(r#"{"model_type":"gpt2","architectures":["GPT2LMHeadModel"]}"#).unwrap_err();
        assert!(matches!(e, ModelConfigError::UnsupportedModel { .. }));
    }

    #[test]
    fn rope_scaling_is_read_with_hf_defaults_and_windows_start_where_the_config_says() {
        let base = r#""vocab_size":97,"hidden_size":32,"intermediate_size":64,"num_hidden_layers":4,"num_attention_heads":4"#;
        let read = |extra: &str| ModelConfig::from_json_str(&format!(r#"{{"model_type":"llama",{base},"max_position_embeddings":4096,{extra}}}"#));
        let c = read(r#""rope_scaling":{"rope_type":"llama3","factor":32.0,"low_freq_factor":1.0,"high_freq_factor":4.0}"#).unwrap();
        assert_eq!(
            c.rope_scaling,
            Some(RopeScaling::Llama3 { factor: 32.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 4096.0 })
        );
        // transformers 5's nesting, and DeepSeek-V3's yarn without a factor (the length ratio).
        let c = read(r#""rope_parameters":{"rope_type":"yarn","original_max_position_embeddings":1024,"beta_fast":0,"mscale":1.0}"#).unwrap();
        let Some(RopeScaling::Yarn { factor, beta_fast, beta_slow, truncate, mscale, mscale_all_dim, .. }) = c.rope_scaling else { panic!("{:?}", c.rope_scaling) };
        assert_eq!((factor, beta_fast, beta_slow, truncate, mscale, mscale_all_dim), (4.0, 32.0, 1.0, true, Some(1.0), None));
        assert_eq!(read(r#""rope_scaling":{"type":"default"}"#).unwrap().rope_scaling, None);
        let e = read(r#""rope_scaling":{"rope_type":"longrope","factor":2.0}"#).unwrap_err().to_string();
        assert!(e.contains("rope_scaling") && e.contains("longrope") && e.contains("refused"), "{e}");
        let e = read(r#""rope_scaling":{"rope_type":"llama3","factor":8.0}"#).unwrap_err().to_string();
        assert!(e.contains("low_freq_factor"), "{e}");
        let e = read(r#""rope_scaling":{"rope_type":"linear","factor":-1}"#).unwrap_err().to_string();
        assert!(e.contains("positive"), "{e}");
        let c = ModelConfig::from_json_str(&format!(r#"{{"model_type":"qwen2",{base},"use_sliding_window":true,"sliding_window":8,"max_window_layers":2}}"#)).unwrap();
        assert_eq!((0..4).map(|i| c.window_of_layer(i)).collect::<Vec<_>>(), [None, None, Some(8), Some(8)]);
        let c = ModelConfig::from_json_str(&format!(r#"{{"model_type":"qwen2",{base},"use_sliding_window":false,"sliding_window":8}}"#)).unwrap();
        assert_eq!(c.window_of_layer(3), None);
        let c = ModelConfig::from_json_str(&format!(r#"{{"model_type":"mistral",{base},"sliding_window":8}}"#)).unwrap();
        assert_eq!(c.window_of_layer(0), Some(8));
    }

    #[test]
    fn partial_rotary_is_refused_not_ignored() {
        let base = r#""model_type":"llama","vocab_size":97,"hidden_size":32,"intermediate_size":64,"num_hidden_layers":1,"num_attention_heads":4"#;
        let read = |extra: &str| ModelConfig::from_json_str(&format!("{{{base}{extra}}}"));
        assert!(read("").is_ok());
        assert!(read(r#","partial_rotary_factor":1.0"#).is_ok());
        assert!(read(r#","partial_rotary_factor":null"#).is_ok());
        for extra in [r#","partial_rotary_factor":0.5"#, r#","rope_parameters":{"rope_type":"default","partial_rotary_factor":0.25}"#] {
            let e = read(extra).unwrap_err();
            assert!(matches!(e, ModelConfigError::Field { field: "partial_rotary_factor", .. }), "{e}");
            assert!(e.to_string().contains("refused"), "{e}");
        }
        assert!(read(r#","partial_rotary_factor":"half""#).unwrap_err().to_string().contains("expected a number"));
    }
}
