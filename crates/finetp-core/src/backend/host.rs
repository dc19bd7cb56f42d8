//! Host-side tensors: what is uploaded to and downloaded from a backend.

use half::{bf16, f16};

use super::{BackendError, DType};

/// Host storage of one tensor, row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum HostData {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    U32(Vec<u32>),
    /// Whole blocks of a [`DType::is_quantized`] format, as stored (see [`super::quant`]).
    Quantized { dtype: DType, bytes: Vec<u8> },
}

impl HostData {
    pub fn dtype(&self) -> DType {
        match self {
            HostData::F32(_) => DType::F32,
            HostData::F16(_) => DType::F16,
            HostData::BF16(_) => DType::BF16,
            HostData::U32(_) => DType::U32,
            HostData::Quantized { dtype, .. } => *dtype,
        }
    }

    /// Elements (for a block format: blocks × elements per block).
    pub fn len(&self) -> usize {
        match self {
            HostData::F32(v) => v.len(),
            HostData::F16(v) => v.len(),
            HostData::BF16(v) => v.len(),
            HostData::U32(v) => v.len(),
            HostData::Quantized { dtype, bytes } => bytes.len() / dtype.block_bytes() * dtype.block_elems(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `n` zeros of float or id dtype `dtype`: the buffer a device download fills (`None` for
    /// a block format, which is uploaded, never downloaded).
    pub fn zeroed(dtype: DType, n: usize) -> Option<Self> {
        Some(match dtype {
            DType::F32 => HostData::F32(vec![0.0; n]),
            DType::F16 => HostData::F16(vec![f16::ZERO; n]),
            DType::BF16 => HostData::BF16(vec![bf16::ZERO; n]),
            DType::U32 => HostData::U32(vec![0; n]),
            _ => return None,
        })
    }

    /// The elements as a device holds them (native byte order; block formats as stored): what
    /// an upload copies and a download writes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            HostData::F32(v) => bytemuck::cast_slice(v),
            HostData::F16(v) => bytemuck::cast_slice(v),
            HostData::BF16(v) => bytemuck::cast_slice(v),
            HostData::U32(v) => bytemuck::cast_slice(v),
            HostData::Quantized { bytes, .. } => bytes,
        }
    }

    /// [`as_bytes`](Self::as_bytes), writable: where a download lands.
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        match self {
            HostData::F32(v) => bytemuck::cast_slice_mut(v),
            HostData::F16(v) => bytemuck::cast_slice_mut(v),
            HostData::BF16(v) => bytemuck::cast_slice_mut(v),
            HostData::U32(v) => bytemuck::cast_slice_mut(v),
            HostData::Quantized { bytes, .. } => bytes,
        }
    }
}

/// A row-major tensor in host memory with its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub data: HostData,
    pub shape: Vec<usize>,
}

impl HostTensor {
    /// Builds a tensor, checking that `shape` covers exactly the data.
    pub fn new(data: HostData, shape: &[usize]) -> Result<Self, BackendError> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(BackendError::Shape(format!(
                "host tensor of shape {shape:?} needs {n} elements, got {}",
                data.len()
            )));
        }
        if let HostData::Quantized { dtype, bytes } = &data {
            // Blocks never cross rows, and the bytes are whole blocks.
            let row = shape.last().copied().unwrap_or(1);
            if !dtype.is_quantized() || !row.is_multiple_of(dtype.block_elems()) || !bytes.len().is_multiple_of(dtype.block_bytes()) {
                return Err(BackendError::Shape(format!("{dtype} host tensor of shape {shape:?}: rows must be whole blocks of {}", dtype.block_elems())));
            }
        }
        Ok(Self { data, shape: shape.to_vec() })
    }

    pub fn f32(data: Vec<f32>, shape: &[usize]) -> Result<Self, BackendError> {
        Self::new(HostData::F32(data), shape)
    }

    pub fn u32(data: Vec<u32>, shape: &[usize]) -> Result<Self, BackendError> {
        Self::new(HostData::U32(data), shape)
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    /// The first element that is NaN or infinite, with its value (for a block format, the
    /// first element of the first block whose scale is); `None` when every value is finite.
    pub fn first_non_finite(&self) -> Option<(usize, f32)> {
        fn find<T: Copy>(v: &[T], f: impl Fn(T) -> f32) -> Option<(usize, f32)> {
            v.iter().map(|&x| f(x)).enumerate().find(|(_, x)| !x.is_finite())
        }
        match &self.data {
            HostData::F32(v) => find(v, |x| x),
            HostData::F16(v) => find(v, f16::to_f32),
            HostData::BF16(v) => find(v, bf16::to_f32),
            HostData::U32(_) => None,
            HostData::Quantized { dtype, bytes } => {
                super::quant::first_non_finite_scale(*dtype, bytes).map(|(b, v)| (b * dtype.block_elems(), v))
            }
        }
    }

    /// The values as f32 (converting 16-bit floats, decoding blocks); `None` for `U32`.
    pub fn to_f32_vec(&self) -> Option<Vec<f32>> {
        match &self.data {
            HostData::F32(v) => Some(v.clone()),
            HostData::F16(v) => Some(v.iter().map(|x| x.to_f32()).collect()),
            HostData::BF16(v) => Some(v.iter().map(|x| x.to_f32()).collect()),
            HostData::U32(_) => None,
            HostData::Quantized { dtype, bytes } => {
                let mut out = vec![0f32; self.data.len()];
                super::quant::decode(*dtype, bytes, &mut out).ok()?;
                Some(out)
            }
        }
    }

    /// [`cast`](Self::cast), consuming `self`: no copy when the dtype is already `dtype`.
    pub fn into_dtype(self, dtype: DType) -> Result<HostTensor, BackendError> {
        if dtype == self.dtype() { Ok(self) } else { self.cast(dtype) }
    }

    /// Converts float data to `dtype` (rounding to nearest); ids stay ids.
    pub fn cast(&self, dtype: DType) -> Result<HostTensor, BackendError> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        let v = self
            .to_f32_vec()
            .ok_or_else(|| BackendError::Unsupported(format!("cast of u32 tensor to {dtype}")))?;
        let data = match dtype {
            DType::F32 => HostData::F32(v),
            DType::F16 => HostData::F16(v.iter().map(|&x| f16::from_f32(x)).collect()),
            DType::BF16 => HostData::BF16(v.iter().map(|&x| bf16::from_f32(x)).collect()),
            DType::U32 => return Err(BackendError::Unsupported("cast of float tensor to u32".into())),
            q => return Err(BackendError::Unsupported(format!("cast to the block format {q} (weights are stored in one, never quantised by a cast)"))),
        };
        Ok(HostTensor { data, shape: self.shape.clone() })
    }
}

impl HostTensor {
    /// Stacks tensors with equal row length and dtype along the first dimension
    /// (e.g. a gate shard and an up shard into one `gate_up` shard).
    pub fn concat_rows(parts: &[HostTensor]) -> Result<HostTensor, BackendError> {
        let first = parts.first().ok_or_else(|| BackendError::Shape("concat_rows of nothing".into()))?;
        let tail: Vec<usize> = first.shape[1..].to_vec();
        let mut rows = 0;
        for p in parts {
            if p.shape[1..] != tail[..] || p.dtype() != first.dtype() {
                return Err(BackendError::Shape(format!(
                    "concat_rows: {:?} {} does not stack on {:?} {}",
                    p.shape,
                    p.dtype(),
                    first.shape,
                    first.dtype()
                )));
            }
            rows += p.shape[0];
        }
        fn cat<T: Clone>(parts: &[HostTensor], get: impl Fn(&HostData) -> &Vec<T>) -> Vec<T> {
            parts.iter().flat_map(|p| get(&p.data).iter().cloned()).collect()
        }
        let data = match &first.data {
            HostData::F32(_) => HostData::F32(cat(parts, |d| match d { HostData::F32(v) => v, _ => unreachable!("dtype checked") })),
            HostData::F16(_) => HostData::F16(cat(parts, |d| match d { HostData::F16(v) => v, _ => unreachable!("dtype checked") })),
            HostData::BF16(_) => HostData::BF16(cat(parts, |d| match d { HostData::BF16(v) => v, _ => unreachable!("dtype checked") })),
            HostData::U32(_) => HostData::U32(cat(parts, |d| match d { HostData::U32(v) => v, _ => unreachable!("dtype checked") })),
            HostData::Quantized { dtype, .. } => HostData::Quantized {
                dtype: *dtype,
                bytes: cat(parts, |d| match d { HostData::Quantized { bytes, .. } => bytes, _ => unreachable!("dtype checked") }),
            },
        };
        let mut shape = vec![rows];
        shape.extend(tail);
        HostTensor::new(data, &shape)
    }
}
