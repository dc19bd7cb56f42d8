//! GGUF tensors served under HF names and shapes, dequantised to f32 one slice at a time.

use std::path::Path;

use finetp_core::backend::{DType, HostTensor};
use finetp_core::config::ModelConfig;
use finetp_core::shard::{Axis, LoadError, ShardSpec, WeightSource};

use super::dequant::dequantize;
use super::{GgufFile, TensorInfo};
use crate::LoaderError;

/// A GGUF checkpoint as a [`WeightSource`]. Row slices dequantise only their rows; column slices
/// dequantise whole rows and keep the requested columns (quant blocks run along rows).
pub struct GgufWeights {
    file: GgufFile,
    /// `(q heads, kv heads)`, to undo llama.cpp's q/k row permutation.
    heads: (usize, usize),
}

/// HF tensor name → GGUF tensor name (llama-style architectures).
fn gguf_name(hf: &str) -> Option<String> {
    let fixed = match hf {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "lm_head.weight" => Some("output.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, tail) = rest.split_once('.')?;
    let mapped = match tail {
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "self_attn.q_proj.bias" => "attn_q.bias",
        "self_attn.k_proj.bias" => "attn_k.bias",
        "self_attn.v_proj.bias" => "attn_v.bias",
        "self_attn.q_norm.weight" => "attn_q_norm.weight",
        "self_attn.k_norm.weight" => "attn_k_norm.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        "input_layernorm.weight" => "attn_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        _ => return None,
    };
    Some(format!("blk.{layer}.{mapped}"))
}

impl GgufWeights {
    pub fn open(path: &Path) -> Result<(Self, ModelConfig), LoaderError> {
        let file = GgufFile::open(path)?;
        let cfg = config_from_metadata(&file)?;
        let heads = (cfg.num_attention_heads, cfg.num_key_value_heads);
        Ok((Self { file, heads }, cfg))
    }

    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    fn info(&self, hf: &str) -> Result<(String, &TensorInfo), LoadError> {
        let missing = || LoadError::MissingTensor { name: hf.to_string(), source_desc: self.describe() };
        let g = gguf_name(hf).ok_or_else(missing)?;
        let t = self.file.tensors.get(&g).ok_or_else(missing)?;
        Ok((g, t))
    }

    /// Dequantises rows `r0..r1` of a `[rows, cols]` tensor.
    fn rows(&self, hf: &str, t: &TensorInfo, cols: usize, r0: usize, r1: usize) -> Result<Vec<f32>, LoadError> {
        if !t.ty.is_supported() {
            return Err(LoadError::Invalid {
                name: hf.to_string(),
                source_desc: self.describe(),
                detail: format!("GGML type {:?} is not supported (F32, F16, BF16, Q8_0, Q4_0, Q4_1 are)", t.ty),
            });
        }
        let rb = t.ty.row_bytes(cols).ok_or_else(|| LoadError::Invalid {
            name: hf.to_string(),
            source_desc: self.describe(),
            detail: format!("rows of {cols} do not fill whole {:?} blocks", t.ty),
        })?;
        let data = self.file.data(t);
        let mut out = vec![0f32; (r1 - r0) * cols];
        dequantize(t.ty, &data[r0 * rb..r1 * rb], &mut out);
        Ok(out)
    }
}

/// llama.cpp stores q/k rows as `reshape(heads, 2, hd/2, in).swapaxes(1, 2)` of HF's for its
/// interleaved RoPE; this puts them back in HF order (NeoX RoPE).
fn unpermute(v: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let hd = rows / heads.max(1);
    let mut out = vec![0f32; v.len()];
    for h in 0..heads {
        for j in 0..hd / 2 {
            for s in 0..2 {
                let (src, dst) = (h * hd + 2 * j + s, h * hd + s * (hd / 2) + j);
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&v[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

impl WeightSource for GgufWeights {
    /// Every GGUF tensor is dequantised to f32 on load (for now).
    fn loaded_dtype(&self, name: &str) -> Option<DType> {
        self.info(name).ok().map(|_| DType::F32)
    }

    fn shape(&self, name: &str) -> Result<Vec<usize>, LoadError> {
        let (_, t) = self.info(name)?;
        Ok(t.dims.iter().rev().copied().collect())
    }

    fn load(&self, name: &str, spec: &ShardSpec) -> Result<HostTensor, LoadError> {
        let (_, t) = self.info(name)?;
        let shape = self.shape(name)?;
        let (rows, cols) = match shape.as_slice() {
            [c] => (*c, 1),
            [r, c] => (*r, *c),
            s => return Err(LoadError::Invalid { name: name.into(), source_desc: self.describe(), detail: format!("{}-D tensor {s:?}", s.len()) }),
        };
        let permuted = if name.ends_with("self_attn.q_proj.weight") {
            Some(self.heads.0)
        } else if name.ends_with("self_attn.k_proj.weight") {
            Some(self.heads.1)
        } else {
            None
        };
        let full_rows = |s: &Self| s.rows(name, t, if shape.len() == 1 { rows } else { cols }, 0, if shape.len() == 1 { 1 } else { rows });
        let data = match (permuted, spec.axis) {
            // Row slices of ordinary tensors read only their rows.
            (None, Axis::Rows) if shape.len() == 2 => {
                let end = spec.start + spec.len;
                if end > rows {
                    return Err(LoadError::Invalid { name: name.into(), source_desc: self.describe(), detail: format!("rows {}..{end} of {rows}", spec.start) });
                }
                let mut v = self.rows(name, t, cols, spec.start, end)?;
                v.resize(spec.padded_len * cols, 0.0);
                return Ok(HostTensor::f32(v, &spec.sliced_shape(&shape))?);
            }
            (Some(heads), _) => unpermute(&full_rows(self)?, rows, cols, heads),
            _ => full_rows(self)?,
        };
        let full = HostTensor::f32(data, &shape)?;
        spec.slice(&full).ok_or_else(|| LoadError::Invalid {
            name: name.into(),
            source_desc: self.describe(),
            detail: format!("slice {spec:?} does not fit shape {shape:?}"),
        })
    }

    fn describe(&self) -> String {
        self.file.path.display().to_string()
    }
}

/// The HF `config.json` equivalent of the GGUF metadata, parsed by the shared
/// [`ModelConfig`] so validation is the same for both formats.
fn config_from_metadata(f: &GgufFile) -> Result<ModelConfig, LoaderError> {
    let bad = |detail: String| LoaderError::Gguf { path: f.path.display().to_string(), detail };
    let arch = f.meta_str("general.architecture").ok_or_else(|| bad("no general.architecture".into()))?.to_string();
    let model_type = match arch.as_str() {
        "llama" | "qwen2" | "qwen3" => arch.clone(),
        other => return Err(bad(format!("architecture {other} is not supported (llama, qwen2, qwen3 are)"))),
    };
    let u = |k: &str| f.meta_u64(&format!("{arch}.{k}"));
    let need = |k: &str| u(k).ok_or_else(|| bad(format!("missing {arch}.{k}")));
    let heads = need("attention.head_count")?;
    let hidden = need("embedding_length")?;
    let vocab = u("vocab_size").or_else(|| match f.metadata.get("tokenizer.ggml.tokens") {
        Some(super::MetaValue::Array(a)) => Some(a.len() as u64),
        _ => None,
    });
    let json = serde_json::json!({
        "model_type": model_type,
        "vocab_size": vocab.ok_or_else(|| bad("no vocabulary size".into()))?,
        "hidden_size": hidden,
        "intermediate_size": need("feed_forward_length")?,
        "num_hidden_layers": need("block_count")?,
        "num_attention_heads": heads,
        "num_key_value_heads": u("attention.head_count_kv").unwrap_or(heads),
        "head_dim": u("attention.key_length").or_else(|| u("rope.dimension_count")).unwrap_or(hidden / heads.max(1)),
        "rope_theta": f.meta_f64(&format!("{arch}.rope.freq_base")).unwrap_or(10000.0),
        "rms_norm_eps": f.meta_f64(&format!("{arch}.attention.layer_norm_rms_epsilon")).unwrap_or(1e-5),
        "max_position_embeddings": u("context_length").unwrap_or(4096),
        "tie_word_embeddings": !f.tensors.contains_key("output.weight"),
    });
    Ok(ModelConfig::from_json_str(&json.to_string())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_both_ways_for_a_layer() {
        assert_eq!(gguf_name("model.layers.12.mlp.down_proj.weight").as_deref(), Some("blk.12.ffn_down.weight"));
        assert_eq!(gguf_name("model.embed_tokens.weight").as_deref(), Some("token_embd.weight"));
        assert_eq!(gguf_name("model.layers.0.bogus"), None);
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permutation() {
        // HF rows 0..8 for 2 heads of dim 4, 1 column; permute as llama.cpp does, then undo.
        let hf: Vec<f32> = (0..8).map(|x| x as f32).collect();
        let (heads, hd) = (2, 4);
        let mut gg = vec![0f32; 8];
        for h in 0..heads {
            for j in 0..hd / 2 {
                for s in 0..2 {
                    gg[h * hd + 2 * j + s] = hf[h * hd + s * (hd / 2) + j];
                }
            }
        }
        assert_eq!(unpermute(&gg, 8, 1, heads), hf);
    }
}
