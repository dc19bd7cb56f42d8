//! The GGUF formats the loader decodes to f32 at load (`Q5_0`, `Q5_1`, `Q4_K`, `Q5_K`, `Q6_K`)
//! against an independent decoder: blocks made (`Q5_*`: by its quantisers; k-quants: random
//! bytes with finite scales) and decoded by the `gguf` Python package's `gguf.quants`
//! (`tools/gen_goldens.py decoded`, committed in `tests/data/gguf_decoded.json`). Equal bit for
//! bit; and a tensor of each loads from a GGUF file, whole and sliced, as those values.

use finetp_core::shard::{Axis, ShardSpec, WeightSource};
use finetp_loader::gguf::{GgmlType, GgufWeights, dequantize};

mod common;

#[derive(serde::Deserialize)]
struct Golden {
    generator: String,
    formats: std::collections::BTreeMap<String, Format>,
}

#[derive(serde::Deserialize)]
struct Format {
    shape: Vec<usize>,
    bytes: String,
    values: Vec<f64>,
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

/// (golden name, GGML type id).
const FORMATS: [(&str, u32); 5] = [("q5_0", 6), ("q5_1", 7), ("q4_k", 12), ("q5_k", 13), ("q6_k", 14)];

fn golden() -> Golden {
    let g: Golden = serde_json::from_str(include_str!("data/gguf_decoded.json")).unwrap();
    assert!(g.generator.contains("gguf.quants"));
    g
}

#[test]
fn blocks_decode_as_the_gguf_package_decodes_them() {
    let g = golden();
    for (name, id) in FORMATS {
        let f = &g.formats[name];
        let n: usize = f.shape.iter().product();
        let ty = GgmlType::from_id(id);
        let bytes = hex(&f.bytes);
        assert!(ty.is_supported(), "{name}");
        assert_eq!(Some(bytes.len()), ty.bytes_for(n), "{name}: block bytes");
        let mut out = vec![0f32; n];
        dequantize(ty, &bytes, &mut out);
        for (i, (got, want)) in out.iter().zip(&f.values).enumerate() {
            assert_eq!(got.to_bits(), (*want as f32).to_bits(), "{name} element {i}: {got} vs gguf's {want}");
        }
    }
}

#[test]
fn tensors_of_each_format_load_whole_and_sliced_as_decoded() {
    let g = golden();
    let dir = tempfile::tempdir().unwrap();
    for (name, id) in FORMATS {
        let f = &g.formats[name];
        let bytes = hex(&f.bytes);
        // The golden's values as a [2, n/2] tensor (whole blocks per row).
        let n: usize = f.shape.iter().product();
        let (rows, cols) = (2, n / 2);
        let path = dir.path().join(format!("{name}.gguf"));
        common::write_gguf(&path, &[("token_embd.weight", vec![cols as u64, rows as u64], id, bytes)]);
        let (w, _) = GgufWeights::open(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let name_hf = "model.embed_tokens.weight";
        let want: Vec<f32> = f.values.iter().map(|v| *v as f32).collect();
        let full = w.load(name_hf, &ShardSpec::full(Axis::Rows, rows)).unwrap().to_f32_vec().unwrap();
        assert_eq!(full, want, "{name}: whole");
        // Columns that cut blocks: decoded from the blocks that cover them, row by row.
        let (c0, len) = (cols / 3, cols / 4);
        let cut = w.load(name_hf, &ShardSpec::range(Axis::Cols, c0, len)).unwrap().to_f32_vec().unwrap();
        let expect: Vec<f32> = (0..rows).flat_map(|r| want[r * cols + c0..r * cols + c0 + len].to_vec()).collect();
        assert_eq!(cut, expect, "{name}: columns {c0}..{}", c0 + len);
        let row1 = w.load(name_hf, &ShardSpec::range(Axis::Rows, 1, 1)).unwrap().to_f32_vec().unwrap();
        assert_eq!(row1, want[cols..], "{name}: row 1");
    }
}
