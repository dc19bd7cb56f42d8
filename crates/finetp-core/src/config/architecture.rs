//! The architectures finetp knows, and how a checkpoint names them: HF's `architectures` class
//! names and `model_type`s (GGUF's `general.architecture` is mapped to a `model_type` by the
//! loader).

use super::ModelConfigError;

/// A decoder architecture finetp can build (the model registry maps each to a model crate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    Llama,
    /// Llama blocks with an optional sliding attention window.
    Mistral,
    /// q/k/v bias.
    Qwen2,
    /// Per-head q/k RMSNorm.
    Qwen3,
    /// MLA; MoE with softmax scoring and (group-limited) greedy top-k.
    DeepseekV2,
    /// MLA; MoE with sigmoid scoring and bias-corrected group-limited top-k (`noaux_tc`).
    DeepseekV3,
}

impl Architecture {
    pub const ALL: [Architecture; 6] = [
        Architecture::Llama,
        Architecture::Mistral,
        Architecture::Qwen2,
        Architecture::Qwen3,
        Architecture::DeepseekV2,
        Architecture::DeepseekV3,
    ];

    /// HF's `model_type`.
    pub const fn model_type(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Mistral => "mistral",
            Architecture::Qwen2 => "qwen2",
            Architecture::Qwen3 => "qwen3",
            Architecture::DeepseekV2 => "deepseek_v2",
            Architecture::DeepseekV3 => "deepseek_v3",
        }
    }

    /// HF's model class, as `config.json`'s `architectures` lists it.
    pub const fn hf_class(self) -> &'static str {
        match self {
            Architecture::Llama => "LlamaForCausalLM",
            Architecture::Mistral => "MistralForCausalLM",
            Architecture::Qwen2 => "Qwen2ForCausalLM",
            Architecture::Qwen3 => "Qwen3ForCausalLM",
            Architecture::DeepseekV2 => "DeepseekV2ForCausalLM",
            Architecture::DeepseekV3 => "DeepseekV3ForCausalLM",
        }
    }

    /// True for the MLA + MoE family.
    pub const fn is_deepseek(self) -> bool {
        matches!(self, Architecture::DeepseekV2 | Architecture::DeepseekV3)
    }

    /// `"LlamaForCausalLM (llama), ..."`: what an unsupported-model error lists.
    pub fn supported_list() -> String {
        Self::ALL.iter().map(|a| format!("{} ({})", a.hf_class(), a.model_type())).collect::<Vec<_>>().join(", ")
    }

    /// The architecture a `config.json` names: the first known class of `architectures` when
    /// it lists one, else `model_type`.
    ///
    /// # Errors
    /// [`ModelConfigError::UnsupportedModel`] naming what the config says and listing what is
    /// supported.
    pub fn from_hf(architectures: &[&str], model_type: Option<&str>) -> Result<Self, ModelConfigError> {
        let by_class = architectures.iter().find_map(|c| Self::ALL.into_iter().find(|a| a.hf_class() == *c));
        let by_type = || model_type.and_then(|t| Self::ALL.into_iter().find(|a| a.model_type() == t));
        by_class.or_else(by_type).ok_or_else(|| {
            let named = match (architectures.first(), model_type) {
                (Some(_), Some(t)) => format!("architectures {architectures:?} and model_type \"{t}\""),
                (Some(_), None) => format!("architectures {architectures:?}"),
                (None, Some(t)) => format!("model_type \"{t}\""),
                (None, None) => "neither architectures nor model_type".into(),
            };
            ModelConfigError::UnsupportedModel { named, supported: Self::supported_list() }
        })
    }
}

impl std::fmt::Display for Architecture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.hf_class())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_win_over_model_type_and_unknowns_list_the_supported() {
        assert_eq!(Architecture::from_hf(&["MistralForCausalLM"], Some("llama")).unwrap(), Architecture::Mistral);
        assert_eq!(Architecture::from_hf(&[], Some("deepseek_v2")).unwrap(), Architecture::DeepseekV2);
        assert_eq!(Architecture::from_hf(&["Unknown"], Some("qwen3")).unwrap(), Architecture::Qwen3);
        let e = Architecture::from_hf(&["GPT2LMHeadModel"], Some("gpt2")).unwrap_err().to_string();
        assert!(e.contains("GPT2LMHeadModel") && e.contains("gpt2") && e.contains("DeepseekV3ForCausalLM (deepseek_v3)"), "{e}");
    }
}
