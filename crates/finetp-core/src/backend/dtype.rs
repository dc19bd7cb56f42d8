//! Element types a backend stores.

use std::fmt;

/// What a dtype is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DTypeKind {
    /// One float per element: activations (in the backend's
    /// [`activation_dtype`](super::Backend::activation_dtype)) and weights.
    Float,
    /// Token ids, slots, positions, block tables.
    Index,
    /// Weights stored in blocks of several elements with their scales (GGUF `Q8_0`, `Q4_K`, …;
    /// int8 with per-channel scales): only a GEMM's weight operand may have one.
    Quantized,
}

/// Element type of a [`Tensor`](super::Tensor).
///
/// The contract's dtype family: activations are a float the backend chooses (f32 on the CPU
/// reference); weights may be any float or — as the quantisation work adds them — a
/// [`DTypeKind::Quantized`] block format, which is why the enum is `#[non_exhaustive]`: a
/// backend answers a dtype it does not know with [`BackendError::Unsupported`](super::BackendError::Unsupported).
/// Ids are `U32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum DType {
    F32,
    F16,
    BF16,
    U32,
    /// GGUF `Q8_0`: blocks of 32 int8 with one f16 scale (34 bytes).
    #[serde(rename = "q8_0")]
    Q8_0,
    /// GGUF `Q4_0`: blocks of 32 4-bit values, offset 8, with one f16 scale (18 bytes).
    #[serde(rename = "q4_0")]
    Q4_0,
    /// GGUF `Q4_1`: blocks of 32 unsigned 4-bit values with an f16 scale and minimum (20 bytes).
    #[serde(rename = "q4_1")]
    Q4_1,
}

impl DType {
    pub const fn kind(self) -> DTypeKind {
        match self {
            DType::F32 | DType::F16 | DType::BF16 => DTypeKind::Float,
            DType::U32 => DTypeKind::Index,
            DType::Q8_0 | DType::Q4_0 | DType::Q4_1 => DTypeKind::Quantized,
        }
    }

    /// Elements per storage block (1 for scalar types; 32 or 256 for block formats).
    pub const fn block_elems(self) -> usize {
        match self {
            DType::Q8_0 | DType::Q4_0 | DType::Q4_1 => 32,
            _ => 1,
        }
    }

    /// Bytes per storage block (the element size for scalar types).
    pub const fn block_bytes(self) -> usize {
        match self {
            DType::F32 | DType::U32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::Q8_0 => 34,
            DType::Q4_0 => 18,
            DType::Q4_1 => 20,
        }
    }

    /// Bytes per element, for scalar types (a block format's is fractional: use
    /// [`storage_bytes`](Self::storage_bytes)).
    pub const fn size_in_bytes(self) -> usize {
        self.block_bytes() / self.block_elems()
    }

    /// Bytes that `numel` elements occupy (whole blocks), `None` on overflow or when `numel`
    /// is not a whole number of blocks.
    pub const fn storage_bytes(self, numel: usize) -> Option<usize> {
        if !numel.is_multiple_of(self.block_elems()) {
            return None;
        }
        (numel / self.block_elems()).checked_mul(self.block_bytes())
    }

    /// True for the block formats only a GEMM's weight operand (or an embedding table) has.
    pub const fn is_quantized(self) -> bool {
        matches!(self.kind(), DTypeKind::Quantized)
    }

    /// True for the floating-point types an activation or a float weight may have.
    pub const fn is_float(self) -> bool {
        matches!(self.kind(), DTypeKind::Float)
    }

    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::U32 => "u32",
            DType::Q8_0 => "q8_0",
            DType::Q4_0 => "q4_0",
            DType::Q4_1 => "q4_1",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
