//! Block-scaled FP8 checkpoints, as DeepSeek-V3/R1 ship them: each linear weight stored in
//! `float8_e4m3fn` next to an f32 (or bf16) `<name>_scale_inv` of shape
//! `[ceil(rows / br), ceil(cols / bc)]`, one scale per `br × bc` block (`weight_block_size`,
//! 128 × 128), the weight being `e4m3 × scale`. Edge blocks are partial. The CPU path holds f32,
//! so a slice is dequantised at load, reading only the rows and columns it keeps.

use float8::F8E4M3;
use serde_json::Value;

use crate::LoaderError;

/// `quantization_config` of a block-scaled FP8 checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fp8BlockScale {
    pub block_rows: usize,
    pub block_cols: usize,
}

impl Fp8BlockScale {
    /// Reads config.json's `quantization_config`: `None` without one, the block size for
    /// `quant_method: "fp8"` in e4m3 with a `weight_block_size`, and a typed refusal for every
    /// other scheme (whose weights finetp would otherwise misread).
    pub fn from_config(raw: &Value, path: &str) -> Result<Option<Self>, LoaderError> {
        let Some(q) = raw.get("quantization_config").filter(|q| !q.is_null()) else { return Ok(None) };
        let refuse = |detail: String| Err(LoaderError::Quantization { path: path.to_string(), detail });
        let method = q.get("quant_method").and_then(Value::as_str).unwrap_or("(none)");
        if method != "fp8" {
            return refuse(format!(
                "quantization_config.quant_method \"{method}\" is not supported: finetp reads block-scaled FP8 \
                 safetensors (DeepSeek-V3/R1) and GGUF files"
            ));
        }
        if let Some(fmt) = q.get("fmt").and_then(Value::as_str).filter(|f| *f != "e4m3") {
            return refuse(format!("FP8 format \"{fmt}\" is not supported (e4m3 is)"));
        }
        let Some(block) = q.get("weight_block_size").filter(|b| !b.is_null()) else {
            return refuse("per-tensor FP8 (no quantization_config.weight_block_size) is not supported; block-scaled FP8 is".into());
        };
        let positive = |v: &Value| v.as_u64().filter(|&x| x > 0).map(|x| x as usize);
        match block.as_array().filter(|a| a.len() == 2).map(|a| (positive(&a[0]), positive(&a[1]))) {
            Some((Some(block_rows), Some(block_cols))) => Ok(Some(Self { block_rows, block_cols })),
            _ => refuse("quantization_config.weight_block_size must be two positive integers".into()),
        }
    }

    /// The scale grid of a `[rows, cols]` weight: `[ceil(rows / br), ceil(cols / bc)]`.
    pub fn grid(&self, rows: usize, cols: usize) -> [usize; 2] {
        [rows.div_ceil(self.block_rows), cols.div_ceil(self.block_cols)]
    }

    /// Rows `r0..r1`, columns `c0..c1` of the `[_, cols]` e4m3 matrix `q` (row-major bytes),
    /// each element times its block's scale from `scale` (row-major over [`grid`](Self::grid)),
    /// appended to `out` row by row, each row followed by `pad` zeros.
    #[allow(clippy::too_many_arguments)]
    pub fn dequant_into(&self, q: &[u8], cols: usize, scale: &[f32], (r0, r1): (usize, usize), (c0, c1): (usize, usize), pad: usize, out: &mut Vec<f32>) {
        let grid_cols = cols.div_ceil(self.block_cols);
        for r in r0..r1 {
            let scales = &scale[(r / self.block_rows) * grid_cols..][..grid_cols];
            let row = &q[r * cols..(r + 1) * cols];
            out.extend((c0..c1).map(|c| F8E4M3::from_bits(row[c]).to_f32() * scales[c / self.block_cols]));
            out.resize(out.len() + pad, 0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Fp8BlockScale = Fp8BlockScale { block_rows: 2, block_cols: 3 };

    #[test]
    fn each_element_takes_its_blocks_scale_including_partial_edge_blocks() {
        // A [3, 4] weight in 2x3 blocks: grid [2, 2], the last row and column are partial.
        assert_eq!(B.grid(3, 4), [2, 2]);
        // e4m3: 0x38 = 1.0, 0x40 = 2.0, 0xB8 = -1.0, 0x00 = 0.
        let q = [0x38, 0x40, 0xB8, 0x38, /**/ 0x00, 0x38, 0x38, 0x40, /**/ 0x40, 0x40, 0x38, 0xB8];
        let scale = [10.0, 100.0, 1000.0, 10000.0];
        let mut out = Vec::new();
        B.dequant_into(&q, 4, &scale, (0, 3), (0, 4), 0, &mut out);
        assert_eq!(out, vec![10.0, 20.0, -10.0, 100.0, 0.0, 10.0, 10.0, 200.0, 2000.0, 2000.0, 1000.0, -10000.0]);
        // A slice inside a block keeps the block's scale; padding follows each row.
        let mut out = Vec::new();
        B.dequant_into(&q, 4, &scale, (1, 3), (2, 4), 1, &mut out);
        assert_eq!(out, vec![10.0, 200.0, 0.0, 1000.0, -10000.0, 0.0]);
    }

    #[test]
    fn the_config_is_read_and_other_schemes_are_refused() {
        let cfg = |q: Value| serde_json::json!({ "quantization_config": q });
        let ds = cfg(serde_json::json!({"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}));
        assert_eq!(Fp8BlockScale::from_config(&ds, "c").unwrap(), Some(Fp8BlockScale { block_rows: 128, block_cols: 128 }));
        assert_eq!(Fp8BlockScale::from_config(&serde_json::json!({}), "c").unwrap(), None);
        for (q, says) in [
            (serde_json::json!({"quant_method": "gptq", "bits": 4}), "\"gptq\" is not supported"),
            (serde_json::json!({"quant_method": "fp8", "fmt": "e5m2", "weight_block_size": [128, 128]}), "\"e5m2\""),
            (serde_json::json!({"quant_method": "fp8"}), "per-tensor FP8"),
            (serde_json::json!({"quant_method": "fp8", "weight_block_size": [128]}), "two positive integers"),
        ] {
            let e = Fp8BlockScale::from_config(&cfg(q), "m/config.json").unwrap_err().to_string();
            assert!(e.starts_with("m/config.json: ") && e.contains(says), "{e}");
        }
    }
}
