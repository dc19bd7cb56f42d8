//! finetp's block decoder (`finetp_core::backend::quant::decode`, which every backend and the
//! loader use) against an independent one: blocks made by the `gguf` Python package's own
//! quantisers and the values its `gguf.quants.dequantize` gives them
//! (`tools/gen_goldens.py quants`, committed in `tests/data/gguf_quants.json`). Equal bit for bit.

use finetp_core::backend::DType;
use finetp_core::backend::quant::decode;

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

#[test]
fn blocks_decode_as_the_gguf_package_decodes_them() {
    let g: Golden = serde_json::from_str(include_str!("data/gguf_quants.json")).unwrap();
    assert!(g.generator.contains("gguf.quants"));
    for (name, dtype) in [("q8_0", DType::Q8_0), ("q4_0", DType::Q4_0), ("q4_1", DType::Q4_1)] {
        let f = &g.formats[name];
        let n: usize = f.shape.iter().product();
        let bytes = hex(&f.bytes);
        assert_eq!(bytes.len(), dtype.storage_bytes(n).unwrap(), "{name}: block bytes");
        let mut out = vec![0f32; n];
        decode(dtype, &bytes, &mut out).unwrap();
        for (i, (got, want)) in out.iter().zip(&f.values).enumerate() {
            assert_eq!(got.to_bits(), (*want as f32).to_bits(), "{name} element {i}: {got} vs gguf's {want}");
        }
    }
}
