//! GGUF tensors served under HF names and shapes, one slice at a time: F16/BF16 kept in 16 bits,
//! the block formats decoded to f32 (or kept as stored, [`WeightSource::load_stored`]).

use std::path::Path;

use finetp_core::backend::{DType, HostData, HostTensor};
use finetp_core::config::ModelConfig;
use finetp_core::shard::{Axis, LoadError, ShardSpec, WeightSource};
use half::{bf16, f16};

use super::GgmlType;
use super::dequant::dequantize;
use super::{GgufFile, TensorInfo};
use crate::LoaderError;

/// A GGUF checkpoint as a [`WeightSource`]. A slice dequantises only what it keeps: row slices
/// their rows, column slices the quant blocks that cover their columns, one row at a time (quant
/// blocks run along rows). No rank materialises a whole tensor to cut its part.
pub struct GgufWeights {
    file: GgufFile,
    /// `(q heads, kv heads)` when llama.cpp's converter permuted q/k rows (its `llama`
    /// architecture only, for interleaved RoPE), to put them back; `None` for files stored in HF
    /// order (qwen2, qwen3).
    permuted_heads: Option<(usize, usize)>,
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
        // convert_hf_to_gguf.py permutes q/k in LlamaModel (llama, mistral), not in Qwen2Model /
        // Qwen3Model, whose RoPE llama.cpp runs NeoX-style on HF's order.
        let permuted_heads = (file.meta_str("general.architecture") == Some("llama")).then_some((cfg.num_attention_heads, cfg.num_key_value_heads));
        Ok((Self { file, permuted_heads }, cfg))
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

    fn invalid(&self, hf: &str, detail: String) -> LoadError {
        LoadError::Invalid { name: hf.to_string(), source_desc: self.describe(), detail }
    }

    /// Dequantises columns `c0..c1` of rows `r0..r1` of a `[rows, cols]` tensor into
    /// `[r1 - r0, c1 - c0]`, reading only the quant blocks that cover those columns.
    fn dequant_range(&self, hf: &str, t: &TensorInfo, cols: usize, (r0, r1): (usize, usize), (c0, c1): (usize, usize)) -> Result<Vec<f32>, LoadError> {
        let Some((per_block, block_bytes)) = t.ty.block() else {
            return Err(self.invalid(hf, format!("GGML type {:?} is not supported (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K are)", t.ty)));
        };
        let rb = t.ty.row_bytes(cols).ok_or_else(|| self.invalid(hf, format!("rows of {cols} do not fill whole {:?} blocks", t.ty)))?;
        let data = self.file.data(t);
        let (b0, b1) = (c0 / per_block, c1.div_ceil(per_block));
        let (skip, width) = (c0 - b0 * per_block, c1 - c0);
        let mut blocks = vec![0f32; (b1 - b0) * per_block];
        let mut out = Vec::with_capacity((r1 - r0) * width);
        for r in r0..r1 {
            let row = &data[r * rb..(r + 1) * rb];
            dequantize(t.ty, &row[b0 * block_bytes..b1 * block_bytes], &mut blocks);
            out.extend_from_slice(&blocks[skip..skip + width]);
        }
        Ok(out)
    }

    /// The head count of a q/k projection whose rows llama.cpp permuted.
    fn permuted_heads(&self, name: &str) -> Option<usize> {
        let (q, kv) = self.permuted_heads?;
        if name.ends_with("self_attn.q_proj.weight") {
            Some(q)
        } else if name.ends_with("self_attn.k_proj.weight") {
            Some(kv)
        } else {
            None
        }
    }
}

/// llama.cpp stores q/k rows as `reshape(heads, 2, hd/2, in).swapaxes(1, 2)` of HF's for its
/// interleaved RoPE; this puts them back in HF order (NeoX RoPE). `cols` is the row length in
/// elements of `v` (floats, or bytes of whole blocks).
fn unpermute<T: Copy + Default>(v: &[T], rows: usize, cols: usize, heads: usize) -> Vec<T> {
    let hd = rows / heads.max(1);
    let mut out = vec![T::default(); v.len()];
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
    /// [`load`](WeightSource::load) keeps F16 and BF16 tensors in 16 bits and decodes the rest to
    /// f32.
    fn loaded_dtype(&self, name: &str) -> Option<DType> {
        self.info(name).ok().map(|(_, t)| match t.ty {
            GgmlType::F16 => DType::F16,
            GgmlType::BF16 => DType::BF16,
            _ => DType::F32,
        })
    }

    fn stored_block_dtype(&self, name: &str) -> Option<DType> {
        self.info(name).ok().and_then(|(_, t)| t.ty.block_dtype())
    }

    /// Q8_0 / Q4_0 / Q4_1 slices as stored: whole rows (q/k rows put back in HF order as whole
    /// rows), or per row the blocks of a column range on block boundaries; zero bytes pad.
    fn load_stored(&self, name: &str, spec: &ShardSpec) -> Result<HostTensor, LoadError> {
        let (_, t) = self.info(name)?;
        let shape = self.shape(name)?;
        let (Some(dtype), &[rows, cols]) = (t.ty.block_dtype(), shape.as_slice()) else {
            return self.load(name, spec);
        };
        // Permuted q/k rows go back to HF order only as whole heads of whole rows.
        let hd = self.permuted_heads(name).map(|heads| rows / heads.max(1));
        let keeps_heads = match (spec.axis, hd) {
            (_, None) => true,
            (Axis::Rows, Some(hd)) => spec.start.is_multiple_of(hd) && spec.len.is_multiple_of(hd),
            (Axis::Cols, Some(_)) => false,
        };
        // Out of range (load names it), or a slice that would cut a block: decoded.
        let Some(mut bytes) = keeps_heads.then(|| spec.block_bytes(dtype, self.file.data(t), rows, cols)).flatten() else {
            return self.load(name, spec);
        };
        if let (Axis::Rows, Some(hd), Some(rb)) = (spec.axis, hd, dtype.storage_bytes(cols)) {
            // The padding rows past `spec.len` stay zero.
            bytes = unpermute(&bytes, spec.len, rb, spec.len / hd);
        }
        let blocks = HostTensor::new(HostData::Quantized { dtype, bytes }, &spec.sliced_shape(&shape))?;
        finetp_core::shard::finite(name, || self.describe(), blocks)
    }

    fn shape(&self, name: &str) -> Result<Vec<usize>, LoadError> {
        let (_, t) = self.info(name)?;
        Ok(t.dims.iter().rev().copied().collect())
    }

    fn load(&self, name: &str, spec: &ShardSpec) -> Result<HostTensor, LoadError> {
        finetp_core::shard::finite(name, || self.describe(), self.decoded(name, spec)?)
    }

    fn describe(&self) -> String {
        self.file.path.display().to_string()
    }
}

impl GgufWeights {
    /// [`WeightSource::load`] before its finiteness check: `spec`'s slice, F16 and BF16 in
    /// their 16 bits (the backends multiply by them), every other type decoded to f32.
    fn decoded(&self, name: &str, spec: &ShardSpec) -> Result<HostTensor, LoadError> {
        let (_, t) = self.info(name)?;
        let shape = self.shape(name)?;
        let cols = shape.last().copied().unwrap_or(1);
        let data = match t.ty {
            GgmlType::F16 | GgmlType::BF16 => {
                let bits = self.slice(name, spec, &shape, |r, c| Ok(self.raw16(t, cols, r, c)))?;
                match t.ty {
                    GgmlType::F16 => HostData::F16(bits.into_iter().map(f16::from_bits).collect()),
                    _ => HostData::BF16(bits.into_iter().map(bf16::from_bits).collect()),
                }
            }
            _ => HostData::F32(self.slice(name, spec, &shape, |r, c| self.dequant_range(name, t, cols, r, c))?),
        };
        Ok(HostTensor::new(data, &spec.sliced_shape(&shape))?)
    }

    /// The raw 16-bit elements of columns `c0..c1` of rows `r0..r1` of an F16 / BF16 tensor
    /// with rows of `cols`.
    fn raw16(&self, t: &TensorInfo, cols: usize, (r0, r1): (usize, usize), (c0, c1): (usize, usize)) -> Vec<u16> {
        let data = self.file.data(t);
        let mut out = Vec::with_capacity((r1 - r0) * (c1 - c0));
        for r in r0..r1 {
            out.extend(data[2 * (r * cols + c0)..2 * (r * cols + c1)].chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])));
        }
        out
    }

    /// `spec`'s slice of tensor `name` of `shape` in HF order, zero-padded as the spec says:
    /// `read(rows, cols)` gives the elements of a row and column range, row-major; q/k rows
    /// llama.cpp permuted are put back per head.
    fn slice<T: Copy + Default>(
        &self,
        name: &str,
        spec: &ShardSpec,
        shape: &[usize],
        read: impl Fn((usize, usize), (usize, usize)) -> Result<Vec<T>, LoadError>,
    ) -> Result<Vec<T>, LoadError> {
        let end = spec.start + spec.len;
        let out_of_range = |n: usize| self.invalid(name, format!("slice {spec:?} does not fit shape {shape:?} ({end} > {n})"));
        match (shape, spec.axis) {
            // A vector is one row: its slice is a column range.
            (&[n], Axis::Rows) => {
                if end > n {
                    return Err(out_of_range(n));
                }
                let mut v = read((0, 1), (spec.start, end))?;
                v.resize(spec.padded_len, T::default());
                Ok(v)
            }
            (&[rows, cols], Axis::Rows) => {
                if end > rows {
                    return Err(out_of_range(rows));
                }
                let mut v = read((spec.start, end), (0, cols))?;
                if let Some(heads) = self.permuted_heads(name) {
                    // The permutation stays inside each head: whole heads unpermute on their own.
                    let hd = rows / heads.max(1);
                    if !(spec.start.is_multiple_of(hd) && spec.len.is_multiple_of(hd)) {
                        return Err(self.invalid(name, format!("rows {}..{end} cut a head of {hd} rows", spec.start)));
                    }
                    v = unpermute(&v, spec.len, cols, spec.len / hd);
                }
                v.resize(spec.padded_len * cols, T::default());
                Ok(v)
            }
            (&[rows, cols], Axis::Cols) => {
                if end > cols {
                    return Err(out_of_range(cols));
                }
                let mut v = read((0, rows), (spec.start, end))?;
                if let Some(heads) = self.permuted_heads(name) {
                    v = unpermute(&v, rows, spec.len, heads);
                }
                let mut padded = vec![T::default(); rows * spec.padded_len];
                for (dst, src) in padded.chunks_exact_mut(spec.padded_len.max(1)).zip(v.chunks_exact(spec.len.max(1))) {
                    dst[..spec.len].copy_from_slice(src);
                }
                Ok(padded)
            }
            (s, _) => Err(self.invalid(name, format!("{}-D tensor {s:?} sliced along {:?}", s.len(), spec.axis))),
        }
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
    let head_dim = u("attention.key_length").unwrap_or(hidden / heads.max(1));
    if let Some(rot) = u("rope.dimension_count").filter(|&r| r != head_dim) {
        return Err(bad(format!(
            "{arch}.rope.dimension_count {rot} is not the head dimension {head_dim}: rotating only part of each head is not supported; refused rather than rotating the whole head"
        )));
    }
    let json = serde_json::json!({
        "model_type": model_type,
        "vocab_size": vocab.ok_or_else(|| bad("no vocabulary size".into()))?,
        "hidden_size": hidden,
        "intermediate_size": need("feed_forward_length")?,
        "num_hidden_layers": need("block_count")?,
        "num_attention_heads": heads,
        "num_key_value_heads": u("attention.head_count_kv").unwrap_or(heads),
        "head_dim": head_dim,
        "rope_theta": f.meta_f64(&format!("{arch}.rope.freq_base")).unwrap_or(10000.0),
        "rms_norm_eps": f.meta_f64(&format!("{arch}.attention.layer_norm_rms_epsilon")).unwrap_or(1e-5),
        "max_position_embeddings": u("context_length").unwrap_or(4096),
        "tie_word_embeddings": !f.tensors.contains_key("output.weight"),
        "rope_scaling": rope_scaling(f, &arch)?,
    });
    // Named as the GGUF's metadata: the config.json fields are finetp's translation of it.
    ModelConfig::from_json_str(&json.to_string()).map_err(|e| LoaderError::config(format!("{} (its metadata)", f.path.display()), e))
}

/// `{arch}.rope.scaling.*` as HF's `rope_scaling`; `null` for none.
///
/// # Errors
/// A scaling type finetp does not read, and `rope_freqs.weight` (per-dimension frequency
/// factors: llama.cpp's form of Llama 3 RoPE scaling), are refused rather than run unscaled.
fn rope_scaling(f: &GgufFile, arch: &str) -> Result<serde_json::Value, LoaderError> {
    let bad = |detail: String| LoaderError::Gguf { path: f.path.display().to_string(), detail };
    if f.tensors.contains_key("rope_freqs.weight") {
        return Err(bad("per-dimension RoPE frequency factors (rope_freqs.weight, llama.cpp's form of Llama 3 RoPE scaling) are not supported yet; refused rather than run with unscaled RoPE".into()));
    }
    let key = |k: &str| format!("{arch}.rope.scaling.{k}");
    Ok(match f.meta_str(&key("type")) {
        None | Some("none") => serde_json::Value::Null,
        Some(t @ ("linear" | "yarn")) => serde_json::json!({
            "rope_type": t,
            "factor": f.meta_f64(&key("factor")).ok_or_else(|| bad(format!("{} without {}", key("type"), key("factor"))))?,
            "original_max_position_embeddings": f.meta_u64(&key("original_context_length")),
        }),
        Some(other) => return Err(bad(format!("{} \"{other}\" is not supported (linear, yarn are)", key("type")))),
    })
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
