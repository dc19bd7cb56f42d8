//! GGML tensor types and their dequantisation to f32, row by row.

use finetp_core::backend::{DType, quant};

use super::decoded_formats::Decoded;
use half::{bf16, f16};

/// The GGML element types finetp reads (others are named in errors by id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q8_0,
    /// Decoded to f32 at load ([`super::decoded_formats`]).
    Q5_0,
    Q5_1,
    Q4K,
    Q5K,
    Q6K,
    Other(u32),
}

impl GgmlType {
    pub fn from_id(id: u32) -> Self {
        match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            12 => GgmlType::Q4K,
            13 => GgmlType::Q5K,
            14 => GgmlType::Q6K,
            30 => GgmlType::BF16,
            other => GgmlType::Other(other),
        }
    }

    /// (elements per block, bytes per block).
    pub(crate) fn block(self) -> Option<(usize, usize)> {
        match self {
            GgmlType::F32 => Some((1, 4)),
            GgmlType::F16 | GgmlType::BF16 => Some((1, 2)),
            GgmlType::Q4_0 => Some((32, 18)),
            GgmlType::Q4_1 => Some((32, 20)),
            GgmlType::Q8_0 => Some((32, 34)),
            t => t.decoded().map(Decoded::block),
        }
    }

    /// Bytes of `n` elements; `None` when `n` is not whole blocks or the size overflows. Unknown
    /// types are sized 0 so the file still opens; reading such a tensor is an error.
    pub fn bytes_for(self, n: usize) -> Option<usize> {
        match self.block() {
            Some((e, b)) => n.is_multiple_of(e).then(|| (n / e).checked_mul(b)).flatten(),
            None => Some(0),
        }
    }

    /// Bytes of one row of `cols` elements.
    pub fn row_bytes(self, cols: usize) -> Option<usize> {
        self.bytes_for(cols)
    }

    /// The contract's block dtype of a quantised type (`None` for float types and unknown ones).
    pub fn block_dtype(self) -> Option<DType> {
        match self {
            GgmlType::Q8_0 => Some(DType::Q8_0),
            GgmlType::Q4_0 => Some(DType::Q4_0),
            GgmlType::Q4_1 => Some(DType::Q4_1),
            _ => None,
        }
    }

    /// The formats only decoded to f32 (no backend keeps them as stored yet).
    fn decoded(self) -> Option<Decoded> {
        Some(match self {
            GgmlType::Q5_0 => Decoded::Q5_0,
            GgmlType::Q5_1 => Decoded::Q5_1,
            GgmlType::Q4K => Decoded::Q4K,
            GgmlType::Q5K => Decoded::Q5K,
            GgmlType::Q6K => Decoded::Q6K,
            _ => return None,
        })
    }

    pub fn is_supported(self) -> bool {
        self.block().is_some()
    }
}

/// Dequantises `data` (whole blocks of `ty`) into `out` (same element count).
pub fn dequantize(ty: GgmlType, data: &[u8], out: &mut [f32]) {
    match ty {
        GgmlType::F32 => {
            for (o, c) in out.iter_mut().zip(data.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (o, c) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (o, c) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1 => {
            let dtype = ty.block_dtype().expect("a block format");
            quant::decode(dtype, data, out).expect("whole blocks: sized by the caller");
        }
        t => match t.decoded() {
            Some(f) => f.decode(data, out),
            None => out.fill(0.0),
        },
    }
}
