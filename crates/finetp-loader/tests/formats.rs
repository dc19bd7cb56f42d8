//! GGUF and safetensors sources: dequantisation against the block formulas, slices equal
//! full-then-slice, and every broken input is a typed error naming the file and tensor.

use std::path::Path;

use finetp_core::backend::{DType, HostData, HostTensor};
use finetp_core::shard::{Axis, ShardSpec, WeightSource};
use finetp_loader::gguf::{GgufFile, GgufWeights};
use finetp_loader::{Checkpoint, LoaderError, SafetensorsDir};
use half::f16;

mod common;
use common::{Meta, write_gguf, write_gguf_with};

/// Q8_0 blocks of `v` (len a multiple of 32) and the values they decode to.
fn q8_0(v: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let (mut bytes, mut dec) = (Vec::new(), Vec::new());
    for blk in v.chunks(32) {
        let amax = blk.iter().fold(0f32, |m, x| m.max(x.abs()));
        let d = f16::from_f32(amax / 127.0);
        bytes.extend(d.to_le_bytes());
        for x in blk {
            let q = if d.to_f32() == 0.0 { 0 } else { (x / d.to_f32()).round() as i8 };
            bytes.push(q as u8);
            dec.push(d.to_f32() * f32::from(q));
        }
    }
    (bytes, dec)
}

/// Q4_1 blocks (d, m, nibbles: element j low, j+16 high) and their decoded values.
fn q4_1(v: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let (mut bytes, mut dec) = (Vec::new(), vec![0f32; v.len()]);
    for (bi, blk) in v.chunks(32).enumerate() {
        let (lo, hi) = blk.iter().fold((f32::MAX, f32::MIN), |(a, b), x| (a.min(*x), b.max(*x)));
        let (d, m) = (f16::from_f32((hi - lo) / 15.0), f16::from_f32(lo));
        bytes.extend(d.to_le_bytes());
        bytes.extend(m.to_le_bytes());
        let q = |x: f32| if d.to_f32() == 0.0 { 0u8 } else { ((x - m.to_f32()) / d.to_f32()).round().clamp(0.0, 15.0) as u8 };
        for j in 0..16 {
            let (a, b) = (q(blk[j]), q(blk[j + 16]));
            bytes.push(a | (b << 4));
            dec[bi * 32 + j] = d.to_f32() * f32::from(a) + m.to_f32();
            dec[bi * 32 + j + 16] = d.to_f32() * f32::from(b) + m.to_f32();
        }
    }
    (bytes, dec)
}

fn values(n: usize, seed: f32) -> Vec<f32> {
    (0..n).map(|i| (i as f32 * 0.37 + seed).sin() * 2.0).collect()
}

#[test]
fn gguf_dequantises_and_slices() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let (h, v) = (64usize, 32usize);
    let emb = values(v * h, 0.1);
    let (q8, emb_dec) = q8_0(&emb);
    let up = values(h * 64, 0.7);
    let (q41, up_dec) = q4_1(&up);
    let norm: Vec<u8> = values(h, 0.3).iter().flat_map(|x| x.to_le_bytes()).collect();
    let f16s: Vec<u8> = values(h * 64, 0.9).iter().flat_map(|x| f16::from_f32(*x).to_le_bytes()).collect();
    write_gguf(&path, &[
        ("token_embd.weight", vec![h as u64, v as u64], 8, q8),
        ("blk.0.ffn_up.weight", vec![h as u64, 64], 3, q41),
        ("blk.0.attn_norm.weight", vec![h as u64], 0, norm),
        ("blk.0.ffn_down.weight", vec![64, h as u64], 1, f16s),
    ]);
    let (w, cfg) = GgufWeights::open(&path).unwrap();
    assert_eq!((cfg.hidden_size, cfg.vocab_size, cfg.num_key_value_heads), (64, 32, 1));
    assert!(cfg.tie_word_embeddings, "no output.weight: tied");
    assert_eq!(w.shape("model.embed_tokens.weight").unwrap(), vec![v, h]);
    let full = w.load_full("model.embed_tokens.weight").unwrap();
    assert_eq!(full.to_f32_vec().unwrap(), emb_dec, "Q8_0 decodes to d*q");
    let up_full = w.load_full("model.layers.0.mlp.up_proj.weight").unwrap();
    assert_eq!(up_full.to_f32_vec().unwrap(), up_dec, "Q4_1 decodes to d*q + m");
    for spec in [ShardSpec::vocab(32, 64, 1, 4), ShardSpec::even(Axis::Cols, h, 1, 2), ShardSpec::even(Axis::Rows, v, 3, 4)] {
        let got = w.load("model.embed_tokens.weight", &spec).unwrap();
        assert_eq!(got, spec.slice(&full).unwrap(), "{spec:?}");
    }
    let down = w.load("model.layers.0.mlp.down_proj.weight", &ShardSpec::even(Axis::Cols, 64, 0, 2)).unwrap();
    assert_eq!(down.shape, vec![h, 32]);
    // F16 stays 16-bit, its slices are the whole tensor's.
    let down_full = w.load_full("model.layers.0.mlp.down_proj.weight").unwrap();
    assert_eq!((down.dtype(), w.loaded_dtype("model.layers.0.mlp.down_proj.weight")), (DType::F16, Some(DType::F16)));
    let want: Vec<f32> = values(h * 64, 0.9).iter().map(|x| f16::from_f32(*x).to_f32()).collect();
    assert_eq!(down_full.to_f32_vec().unwrap(), want, "F16 as stored");
    for spec in [ShardSpec::even(Axis::Cols, 64, 1, 2), ShardSpec::range(Axis::Cols, 7, 13), ShardSpec::range(Axis::Rows, 3, 40)] {
        assert_eq!(w.load("model.layers.0.mlp.down_proj.weight", &spec).unwrap(), spec.slice(&down_full).unwrap(), "F16 {spec:?}");
    }
    // Column slices read only the blocks covering them, also when they start inside a block.
    for spec in [ShardSpec::range(Axis::Cols, 16, 24), ShardSpec::range(Axis::Cols, 40, 24), ShardSpec::range(Axis::Rows, 5, 20)] {
        let got = w.load("model.layers.0.mlp.up_proj.weight", &spec).unwrap();
        assert_eq!(got, spec.slice(&up_full).unwrap(), "Q4_1 {spec:?}");
    }
    let norm_full = w.load_full("model.layers.0.input_layernorm.weight").unwrap();
    let spec = ShardSpec::range(Axis::Rows, 10, 30);
    assert_eq!(w.load("model.layers.0.input_layernorm.weight", &spec).unwrap(), spec.slice(&norm_full).unwrap(), "vector slice");
    assert!(matches!(w.load_full("model.layers.0.mlp.gate_proj.weight"), Err(finetp_core::shard::LoadError::MissingTensor { .. })));
}

/// llama.cpp's converter permutes q/k rows (`reshape(heads, 2, hd/2, in).swapaxes(1, 2)`) for
/// its `llama` architecture only; qwen2/qwen3 files keep HF's order.
fn llama_cpp_permute(hf: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let hd = rows / heads;
    let mut out = vec![0f32; hf.len()];
    for h in 0..heads {
        for j in 0..hd / 2 {
            for s in 0..2 {
                let (dst, src) = (h * hd + 2 * j + s, h * hd + s * (hd / 2) + j);
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&hf[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

#[test]
fn q_and_k_rows_come_back_in_hf_order_for_each_architecture_and_head_slices_read_only_their_heads() {
    let dir = tempfile::tempdir().unwrap();
    let (h, heads, hd) = (64usize, 2usize, 32usize);
    let q_hf = values(heads * hd * h, 0.2);
    let bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    for (arch, stored) in [("llama", llama_cpp_permute(&q_hf, heads * hd, h, heads)), ("qwen2", q_hf.clone()), ("qwen3", q_hf.clone())] {
        let path = dir.path().join(format!("{arch}.gguf"));
        write_gguf_with(&path, arch, &[], &[("blk.0.attn_q.weight", vec![h as u64, (heads * hd) as u64], 0, bytes(&stored))]);
        let (w, _) = GgufWeights::open(&path).unwrap();
        let full = w.load_full("model.layers.0.self_attn.q_proj.weight").unwrap();
        assert_eq!(full.to_f32_vec().unwrap(), q_hf, "{arch}: q rows in HF order");
        let second_head = ShardSpec::range(Axis::Rows, hd, hd);
        assert_eq!(w.load("model.layers.0.self_attn.q_proj.weight", &second_head).unwrap(), second_head.slice(&full).unwrap(), "{arch}");
        let cols = ShardSpec::range(Axis::Cols, 8, 40);
        assert_eq!(w.load("model.layers.0.self_attn.q_proj.weight", &cols).unwrap(), cols.slice(&full).unwrap(), "{arch}");
        if arch == "llama" {
            let e = w.load("model.layers.0.self_attn.q_proj.weight", &ShardSpec::range(Axis::Rows, 8, 32)).unwrap_err().to_string();
            assert!(e.contains("cut a head"), "{e}");
        }
    }
}

#[test]
fn gguf_rope_scaling_is_read_and_frequency_factor_tensors_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let norm: Vec<u8> = values(64, 0.3).iter().flat_map(|x| x.to_le_bytes()).collect();
    let path = dir.path().join("yarn.gguf");
    write_gguf_with(
        &path,
        "qwen2",
        &[("rope.scaling.type", Meta::Str("yarn")), ("rope.scaling.factor", Meta::F32(4.0))],
        &[("blk.0.attn_norm.weight", vec![64], 0, norm.clone())],
    );
    let (_, cfg) = GgufWeights::open(&path).unwrap();
    let scaling = cfg.rope_scaling.expect("yarn read");
    assert_eq!((scaling.name(), scaling.factor()), ("yarn", 4.0));
    let path = dir.path().join("freqs.gguf");
    write_gguf(&path, &[("blk.0.attn_norm.weight", vec![64], 0, norm.clone()), ("rope_freqs.weight", vec![16], 0, norm[..64].to_vec())]);
    let e = GgufWeights::open(&path).err().expect("refused").to_string();
    assert!(e.contains("rope_freqs.weight") && e.contains("freqs.gguf"), "{e}");
    let path = dir.path().join("longrope.gguf");
    write_gguf_with(&path, "llama", &[("rope.scaling.type", Meta::Str("longrope"))], &[("blk.0.attn_norm.weight", vec![64], 0, norm.clone())]);
    let e = GgufWeights::open(&path).err().expect("refused").to_string();
    assert!(e.contains("longrope"), "{e}");
    // Partial rotary: refused, and never taken for the head dimension (64 / 2 heads = 32).
    let path = dir.path().join("partial.gguf");
    write_gguf_with(&path, "qwen2", &[("rope.dimension_count", Meta::U32(16))], &[("blk.0.attn_norm.weight", vec![64], 0, norm.clone())]);
    let e = GgufWeights::open(&path).err().expect("refused").to_string();
    assert!(e.contains("rope.dimension_count 16") && e.contains("head dimension 32") && e.contains("refused"), "{e}");
    let path = dir.path().join("full.gguf");
    write_gguf_with(&path, "qwen2", &[("rope.dimension_count", Meta::U32(32))], &[("blk.0.attn_norm.weight", vec![64], 0, norm)]);
    assert_eq!(GgufWeights::open(&path).unwrap().1.head_dim, 32);
}

#[test]
fn truncated_and_corrupt_gguf_files_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.gguf");
    let norm: Vec<u8> = values(64, 0.3).iter().flat_map(|x| x.to_le_bytes()).collect();
    write_gguf(&path, &[("blk.0.attn_norm.weight", vec![64], 0, norm)]);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 40]).unwrap();
    let e = GgufFile::open(&path).err().expect("truncated file must fail");
    assert!(matches!(e, LoaderError::Gguf { .. }) && e.to_string().contains("t.gguf") && e.to_string().contains("truncated"), "{e}");
    for cut in [3, 20, 60, 200] {
        std::fs::write(&path, &bytes[..cut.min(bytes.len())]).unwrap();
        assert!(GgufFile::open(&path).is_err(), "cut at {cut}");
    }
    std::fs::write(&path, b"NOPE and more bytes").unwrap();
    assert!(GgufFile::open(&path).err().unwrap().to_string().contains("bad magic"));
}

fn write_safetensors(dir: &Path, file: &str, tensors: &[(&str, Vec<usize>, Vec<f32>)]) {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> =
        tensors.iter().map(|(n, s, v)| (n.to_string(), v.iter().flat_map(|x| x.to_le_bytes()).collect(), s.clone())).collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(n, b, s)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join(file)).unwrap();
}

/// e4m3 bytes with exactly known values: 1, 2, 0.5, -1.5, 0 and 448 (the largest).
const E4M3: [(u8, f32); 6] = [(0x38, 1.0), (0x40, 2.0), (0x30, 0.5), (0xBC, -1.5), (0x00, 0.0), (0x7E, 448.0)];

#[test]
fn fp8_block_scaled_weights_dequantise_per_block_and_slice_without_the_whole_tensor() {
    let dir = tempfile::tempdir().unwrap();
    // A [5, 6] e4m3 weight in 2x4 blocks: scale grid [3, 2], the last block row and column partial.
    let (rows, cols) = (5, 6);
    let q: Vec<u8> = (0..rows * cols).map(|i| E4M3[(i * 7 + i / 6) % E4M3.len()].0).collect();
    let scale: Vec<f32> = vec![0.25, 4.0, -2.0, 8.0, 0.125, 16.0];
    let want: Vec<f32> = (0..rows * cols)
        .map(|i| {
            let v = E4M3.iter().find(|(b, _)| *b == q[i]).unwrap().1;
            v * scale[(i / cols / 2) * 2 + (i % cols) / 4]
        })
        .collect();
    let sb: Vec<u8> = scale.iter().flat_map(|x| x.to_le_bytes()).collect();
    let views = vec![
        ("w".to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::F8_E4M3, vec![rows, cols], &q).unwrap()),
        ("w_scale_inv".to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![3, 2], &sb).unwrap()),
        ("bad".to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::F8_E4M3, vec![rows, cols], &q).unwrap()),
        ("bad_scale_inv".to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 3], &sb).unwrap()),
        ("lone".to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::F8_E4M3, vec![rows, cols], &q).unwrap()),
    ];
    safetensors::serialize_to_file(views, None, &dir.path().join("model.safetensors")).unwrap();
    let blocks = finetp_loader::Fp8BlockScale { block_rows: 2, block_cols: 4 };
    let s = SafetensorsDir::open(dir.path()).unwrap().with_fp8_blocks(Some(blocks));
    assert_eq!(s.loaded_dtype("w"), Some(finetp_core::backend::DType::F32));
    let full = HostTensor::f32(want, &[rows, cols]).unwrap();
    for spec in [
        ShardSpec::full(Axis::Rows, rows),
        ShardSpec::range(Axis::Rows, 1, 3),
        ShardSpec::even(Axis::Cols, cols, 1, 2),
        ShardSpec::range(Axis::Cols, 3, 2),
        ShardSpec::vocab(rows, cols, 1, 2),
    ] {
        assert_eq!(s.load("w", &spec).unwrap(), spec.slice(&full).unwrap(), "{spec:?}");
    }
    let e = s.load_full("bad").unwrap_err().to_string();
    assert!(e.contains("bad_scale_inv has shape [2, 3]") && e.contains("[3, 2]"), "{e}");
    let e = s.load_full("lone").unwrap_err().to_string();
    assert!(e.contains("without its block scales \"lone_scale_inv\""), "{e}");
    // Without the checkpoint's quantization_config the bytes cannot be read.
    let e = SafetensorsDir::open(dir.path()).unwrap().load_full("w").unwrap_err().to_string();
    assert!(e.contains("no FP8 quantization_config"), "{e}");
}

#[test]
fn checkpoints_of_other_quantisation_schemes_are_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    write_safetensors(dir.path(), "model.safetensors", &[("a", vec![2], vec![1.0, 2.0])]);
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"model_type":"llama","vocab_size":32,"hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2,
            "quantization_config":{"quant_method":"awq","bits":4}}"#,
    )
    .unwrap();
    let e = Checkpoint::open(dir.path()).err().unwrap();
    assert!(matches!(e, LoaderError::Quantization { .. }) && e.to_string().contains("\"awq\" is not supported"), "{e}");
}

#[test]
fn safetensors_slices_index_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let a = values(6 * 8, 0.5);
    write_safetensors(dir.path(), "model-00001-of-00002.safetensors", &[("a", vec![6, 8], a.clone())]);
    write_safetensors(dir.path(), "model-00002-of-00002.safetensors", &[("b", vec![8], values(8, 0.2))]);
    let s = SafetensorsDir::open(dir.path()).unwrap();
    let full = HostTensor::f32(a, &[6, 8]).unwrap();
    for spec in [ShardSpec::even(Axis::Rows, 6, 1, 3), ShardSpec::even(Axis::Cols, 8, 3, 4), ShardSpec::vocab(6, 8, 1, 2)] {
        assert_eq!(s.load("a", &spec).unwrap(), spec.slice(&full).unwrap(), "{spec:?}");
    }
    assert!(matches!(s.load_full("b").unwrap().data, HostData::F32(_)));
    let e = s.load_full("c").unwrap_err().to_string();
    assert!(e.contains("\"c\"") && e.contains(&dir.path().display().to_string()), "{e}");
    let e = s.expect_shape("a", &[6, 9]).unwrap_err().to_string();
    assert!(e.contains("[6, 8]") && e.contains("[6, 9]"), "{e}");

    // With an index that lists only the first file, "b" is not part of the checkpoint.
    std::fs::write(dir.path().join("model.safetensors.index.json"), r#"{"weight_map":{"a":"model-00001-of-00002.safetensors"}}"#).unwrap();
    assert!(SafetensorsDir::open(dir.path()).unwrap().load_full("b").is_err());
    std::fs::write(dir.path().join("model.safetensors.index.json"), "{not json").unwrap();
    assert!(SafetensorsDir::open(dir.path()).err().unwrap().to_string().contains("index.json"));
    std::fs::remove_file(dir.path().join("model.safetensors.index.json")).unwrap();

    // A truncated shard names its file.
    let p = dir.path().join("model-00001-of-00002.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 10]).unwrap();
    let e = SafetensorsDir::open(dir.path()).err().unwrap().to_string();
    assert!(e.contains("model-00001-of-00002.safetensors"), "{e}");
}

#[test]
fn checkpoint_paths_and_configs_are_checked() {
    let e = Checkpoint::open(Path::new("/nonexistent/model")).err().unwrap().to_string();
    assert!(e.contains("/nonexistent/model") && e.contains("no such file"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let e = Checkpoint::open(dir.path()).err().unwrap().to_string();
    assert!(e.contains("config.json"), "{e}");
    std::fs::write(dir.path().join("config.json"), r#"{"model_type":"llama","vocab_size":32,"hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2}"#).unwrap();
    let e = Checkpoint::open(dir.path()).err().unwrap().to_string();
    assert!(e.contains("no *.safetensors"), "{e}");
}
