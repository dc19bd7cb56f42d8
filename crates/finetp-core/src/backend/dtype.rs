//! Element types a backend stores.

use std::fmt;

/// Element type of a [`Tensor`](super::Tensor).
///
/// Activations are always `F32` (f32 accumulate everywhere); weights may be `F32`, `BF16` or `F16`;
/// token ids are `U32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    F16,
    BF16,
    U32,
}

impl DType {
    /// Bytes per element.
    pub const fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 | DType::U32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// True for the floating-point types a weight may have.
    pub const fn is_float(self) -> bool {
        !matches!(self, DType::U32)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::U32 => "u32",
        })
    }
}
