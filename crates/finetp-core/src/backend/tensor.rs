//! The device tensor every layer passes around.

use super::{Backend, DType};

/// A contiguous, row-major tensor living on backend `B`.
///
/// Deliberately small: inference needs no strides or views. "Rows" are the first dimension
/// (tokens, or vocabulary rows of an embedding table); a row is the product of the other
/// dimensions. Collectives split and join along rows.
pub struct Tensor<B: Backend> {
    buf: B::Buffer,
    shape: Vec<usize>,
    dtype: DType,
}

impl<B: Backend> Tensor<B> {
    /// Wraps a backend buffer. Backends call this; layers get tensors from the backend.
    pub fn from_parts(buf: B::Buffer, shape: Vec<usize>, dtype: DType) -> Self {
        Self { buf, shape, dtype }
    }

    pub fn buffer(&self) -> &B::Buffer {
        &self.buf
    }

    pub fn buffer_mut(&mut self) -> &mut B::Buffer {
        &mut self.buf
    }

    pub fn into_buffer(self) -> B::Buffer {
        self.buf
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Resident bytes of the data (what the memory report measures); whole blocks for block
    /// formats.
    pub fn size_in_bytes(&self) -> usize {
        self.dtype.storage_bytes(self.numel()).unwrap_or(usize::MAX)
    }

    /// Size of the first dimension (0 for a scalar).
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(0)
    }

    /// Elements per row: the product of all dimensions but the first.
    pub fn row_len(&self) -> usize {
        self.shape.iter().skip(1).product()
    }

    /// Reinterprets the shape; the element count must stay the same.
    pub fn reshape(mut self, shape: &[usize]) -> Result<Self, super::BackendError> {
        let n: usize = shape.iter().product();
        if n != self.numel() {
            return Err(super::BackendError::Shape(format!(
                "cannot reshape {:?} into {shape:?}",
                self.shape
            )));
        }
        self.shape = shape.to_vec();
        Ok(self)
    }
}

impl<B: Backend> std::fmt::Debug for Tensor<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor<{}>({:?}, {})", B::NAME, self.shape, self.dtype)
    }
}
