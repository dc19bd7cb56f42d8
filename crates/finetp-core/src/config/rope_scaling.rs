//! RoPE scaling as a `config.json` names it (`rope_scaling`, or transformers 5's
//! `rope_parameters`), with HF's defaults for every field a config leaves out.
//!
//! The frequencies themselves are computed in `decoder::rope`; this is only what the config
//! says.

use serde_json::{Map, Value};

use super::ModelConfigError;
use super::fields::Fields;

/// A RoPE scaling scheme and its parameters (HF's `rope_type`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(tag = "rope_type", rename_all = "snake_case")]
pub enum RopeScaling {
    /// Position interpolation: every frequency divided by `factor`.
    Linear { factor: f64 },
    /// Dynamic NTK: the base grows once a sequence outgrows `max_position_embeddings`. finetp
    /// never runs past that length (`--max-model-len` is capped there), where HF's frequencies
    /// are the plain ones.
    Dynamic { factor: f64 },
    /// Llama 3.1+: long wavelengths divided by `factor`, short ones kept, a smooth ramp between.
    Llama3 { factor: f64, low_freq_factor: f64, high_freq_factor: f64, original_max_position_embeddings: f64 },
    /// YaRN (DeepSeek-V2/V3, Qwen long context): a ramp between interpolated and extrapolated
    /// frequencies, and an attention factor on cos/sin.
    Yarn {
        factor: f64,
        original_max_position_embeddings: f64,
        beta_fast: f64,
        beta_slow: f64,
        /// Round the correction range outward to whole dimensions (HF's `truncate`, default true).
        truncate: bool,
        /// Explicit `attention_factor`; else derived from `factor`, `mscale`, `mscale_all_dim`.
        attention_factor: Option<f64>,
        mscale: Option<f64>,
        mscale_all_dim: Option<f64>,
    },
}

impl RopeScaling {
    /// The scheme's HF name.
    pub fn name(&self) -> &'static str {
        match self {
            RopeScaling::Linear { .. } => "linear",
            RopeScaling::Dynamic { .. } => "dynamic",
            RopeScaling::Llama3 { .. } => "llama3",
            RopeScaling::Yarn { .. } => "yarn",
        }
    }

    /// The scaling `factor`.
    pub fn factor(&self) -> f64 {
        match *self {
            RopeScaling::Linear { factor } | RopeScaling::Dynamic { factor } => factor,
            RopeScaling::Llama3 { factor, .. } | RopeScaling::Yarn { factor, .. } => factor,
        }
    }

    /// Reads the scheme from `config.json`'s root object: `None` when it names none or
    /// `"default"`.
    ///
    /// # Errors
    /// [`ModelConfigError::Field`] naming `rope_scaling` for a scheme finetp does not know
    /// (`longrope`, …) or a required parameter that is missing or not a number.
    pub(super) fn from_config(m: &Map<String, Value>, max_position_embeddings: Option<usize>) -> Result<Option<Self>, ModelConfigError> {
        let params = [m.get("rope_scaling"), m.get("rope_parameters")]
            .into_iter()
            .flatten()
            .filter_map(Value::as_object)
            .find(|o| o.get("rope_type").or_else(|| o.get("type")).and_then(Value::as_str).is_some_and(|t| t != "default"));
        let Some(p) = params else { return Ok(None) };
        let kind = p.get("rope_type").or_else(|| p.get("type")).and_then(Value::as_str).unwrap_or_default();
        let f = Fields(p);
        let bad = |detail: String| ModelConfigError::Field { field: "rope_scaling", detail };
        let num = |k: &'static str| f.opt_f64(k).map_err(|e| bad(format!("{kind}: {e}")));
        let need = |k: &'static str| num(k)?.ok_or_else(|| bad(format!("\"{kind}\" needs \"{k}\"")));
        // HF: the pre-training length from the top level (Phi-3's form), else the parameters,
        // else max_position_embeddings.
        let original = || -> Result<f64, ModelConfigError> {
            let top = Fields(m).opt_f64("original_max_position_embeddings")?;
            top.or(num("original_max_position_embeddings")?)
                .or(max_position_embeddings.map(|n| n as f64))
                .ok_or_else(|| bad(format!("\"{kind}\" needs \"original_max_position_embeddings\"")))
        };
        let scaling = match kind {
            "linear" => RopeScaling::Linear { factor: need("factor")? },
            "dynamic" => RopeScaling::Dynamic { factor: need("factor")? },
            "llama3" => RopeScaling::Llama3 {
                factor: need("factor")?,
                low_freq_factor: need("low_freq_factor")?,
                high_freq_factor: need("high_freq_factor")?,
                original_max_position_embeddings: original()?,
            },
            "yarn" => {
                let original_max_position_embeddings = original()?;
                // DeepSeek-V3's form: no factor, the ratio of the two lengths.
                let factor = match num("factor")? {
                    Some(f) => f,
                    None => max_position_embeddings.map(|n| n as f64).ok_or_else(|| bad("\"yarn\" needs \"factor\"".into()))? / original_max_position_embeddings,
                };
                RopeScaling::Yarn {
                    factor,
                    original_max_position_embeddings,
                    // HF: `get("beta_fast") or 32` — a zero means the default too.
                    beta_fast: num("beta_fast")?.filter(|&b| b != 0.0).unwrap_or(32.0),
                    beta_slow: num("beta_slow")?.filter(|&b| b != 0.0).unwrap_or(1.0),
                    truncate: f.opt_bool("truncate").map_err(|e| bad(format!("yarn: {e}")))?.unwrap_or(true),
                    attention_factor: num("attention_factor")?,
                    mscale: num("mscale")?,
                    mscale_all_dim: num("mscale_all_dim")?,
                }
            }
            other => return Err(bad(format!("RoPE scaling \"{other}\" is not supported (linear, dynamic, llama3, yarn are); refused rather than run with unscaled RoPE"))),
        };
        if let RopeScaling::Llama3 { low_freq_factor, high_freq_factor, .. } = scaling
            && high_freq_factor.partial_cmp(&low_freq_factor) != Some(std::cmp::Ordering::Greater)
        {
            return Err(bad(format!("\"llama3\": high_freq_factor ({high_freq_factor}) must exceed low_freq_factor ({low_freq_factor})")));
        }
        if !(scaling.factor().is_finite() && scaling.factor() > 0.0) {
            return Err(bad(format!("\"{kind}\": factor must be a positive number, got {}", scaling.factor())));
        }
        Ok(Some(scaling))
    }
}
