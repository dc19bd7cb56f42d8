//! Which slice of a full weight a group member holds: a pure function shared by the layers and
//! the loader, so that a rank reads only its slice and never materialises the full tensor.

use crate::backend::{HostData, HostTensor};

/// The axis a weight is split along.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    /// Split the first dimension (output features of a column-parallel linear, vocabulary rows).
    Rows,
    /// Split the second dimension (input features of a row-parallel linear).
    Cols,
}

/// A member's slice of a 2-D (or 1-D, rows only) tensor: `len` elements along `axis` starting
/// at `start` are read from the checkpoint; the slice is then zero-padded to `padded_len`
/// (only vocabulary shards pad: the padded tail of the vocabulary has no checkpoint rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSpec {
    pub axis: Axis,
    pub start: usize,
    pub len: usize,
    pub padded_len: usize,
}

impl ShardSpec {
    /// The whole tensor along `axis` (a replicated weight).
    pub fn full(axis: Axis, len: usize) -> Self {
        Self { axis, start: 0, len, padded_len: len }
    }

    /// Member `rank` of `size` of an even split of `total` along `axis`.
    /// The caller has validated `total % size == 0` (config validation does).
    pub fn even(axis: Axis, total: usize, rank: usize, size: usize) -> Self {
        let part = total / size;
        Self { axis, start: rank * part, len: part, padded_len: part }
    }

    /// `len` elements along `axis` from `start` (an uneven or replicated slice, e.g. the KV
    /// heads a TP rank shares with others).
    pub fn range(axis: Axis, start: usize, len: usize) -> Self {
        Self { axis, start, len, padded_len: len }
    }

    /// vLLM's vocab-parallel layout: the vocabulary is padded to `padded_vocab` and split in
    /// `size` equal row blocks; member `rank` owns padded rows `[rank·Vs, (rank+1)·Vs)`, of which
    /// only those below `vocab` exist in the checkpoint.
    pub fn vocab(vocab: usize, padded_vocab: usize, rank: usize, size: usize) -> Self {
        let per = padded_vocab / size;
        let start = (rank * per).min(vocab);
        let end = ((rank + 1) * per).min(vocab);
        Self { axis: Axis::Rows, start, len: end - start, padded_len: per }
    }

    /// First padded-vocabulary row this shard owns (the id offset of its lookups).
    pub fn first_row(vocab_padded_per_rank: usize, rank: usize) -> usize {
        rank * vocab_padded_per_rank
    }

    /// The shape of the slice given the full shape.
    pub fn sliced_shape(&self, full: &[usize]) -> Vec<usize> {
        let mut s = full.to_vec();
        match self.axis {
            Axis::Rows => s[0] = self.padded_len,
            Axis::Cols => s[1] = self.padded_len,
        }
        s
    }

    /// Cuts this slice out of a full host tensor (for in-memory sources and tests; the
    /// safetensors loader reads the slice straight from the file instead).
    pub fn slice(&self, full: &HostTensor) -> Option<HostTensor> {
        let (rows, cols) = match full.shape.as_slice() {
            [r] => (*r, 1),
            [r, c] => (*r, *c),
            _ => return None,
        };
        let axis_len = if self.axis == Axis::Rows { rows } else { cols };
        if self.start + self.len > axis_len || (self.axis == Axis::Cols && full.shape.len() != 2) {
            return None;
        }
        let shape = self.sliced_shape(&full.shape);
        fn cut<T: Copy + Default>(v: &[T], s: &ShardSpec, rows: usize, cols: usize) -> Vec<T> {
            match s.axis {
                Axis::Rows => {
                    let mut out = v[s.start * cols..(s.start + s.len) * cols].to_vec();
                    out.resize(s.padded_len * cols, T::default());
                    out
                }
                Axis::Cols => {
                    let mut out = Vec::with_capacity(rows * s.padded_len);
                    for r in 0..rows {
                        out.extend_from_slice(&v[r * cols + s.start..r * cols + s.start + s.len]);
                        out.extend(std::iter::repeat_n(T::default(), s.padded_len - s.len));
                    }
                    out
                }
            }
        }
        if let HostData::Quantized { dtype, bytes } = &full.data {
            return self.slice_blocks(*dtype, bytes, (rows, cols), &full.shape);
        }
        let data = match &full.data {
            HostData::F32(v) => HostData::F32(cut(v, self, rows, cols)),
            HostData::F16(v) => HostData::F16(cut(v, self, rows, cols)),
            HostData::BF16(v) => HostData::BF16(cut(v, self, rows, cols)),
            HostData::U32(v) => HostData::U32(cut(v, self, rows, cols)),
            HostData::Quantized { .. } => unreachable!("sliced above"),
        };
        HostTensor::new(data, &shape).ok()
    }

    /// [`slice`](Self::slice) of a `[rows, cols]` tensor of whole blocks.
    fn slice_blocks(&self, dtype: crate::backend::DType, bytes: &[u8], (rows, cols): (usize, usize), full: &[usize]) -> Option<HostTensor> {
        if full.len() != 2 {
            return None;
        }
        let out = self.block_bytes(dtype, bytes, rows, cols)?;
        HostTensor::new(HostData::Quantized { dtype, bytes: out }, &self.sliced_shape(full)).ok()
    }

    /// This slice of the `[rows, cols]` block-format tensor whose bytes are `bytes` (a file's
    /// mapping: only the slice's bytes are read): rows whole (zero padded), columns only on
    /// block boundaries. `None` when the slice would cut a block or does not fit.
    pub fn block_bytes(&self, dtype: crate::backend::DType, bytes: &[u8], rows: usize, cols: usize) -> Option<Vec<u8>> {
        let (be, bb) = (dtype.block_elems(), dtype.block_bytes());
        let rb = dtype.storage_bytes(cols)?;
        let end = self.start + self.len;
        if bytes.len() != rows * rb {
            return None;
        }
        match self.axis {
            Axis::Rows if end <= rows => {
                let mut out = bytes[self.start * rb..end * rb].to_vec();
                out.resize(self.padded_len * rb, 0);
                Some(out)
            }
            Axis::Cols if end <= cols && self.start.is_multiple_of(be) && self.len.is_multiple_of(be) && self.padded_len == self.len => {
                let (b0, nb) = (self.start / be * bb, self.len / be * bb);
                Some((0..rows).flat_map(|r| &bytes[r * rb + b0..r * rb + b0 + nb]).copied().collect())
            }
            _ => None,
        }
    }
}

/// Errors reading weights. Each names the tensor (and the file, where there is one).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    #[error("tensor \"{name}\" not found in {source_desc}")]
    MissingTensor { name: String, source_desc: String },
    #[error("tensor \"{name}\" in {source_desc} has shape {got:?}, the model config implies {expected:?}")]
    ShapeMismatch { name: String, source_desc: String, expected: Vec<usize>, got: Vec<usize> },
    #[error("tensor \"{name}\" in {source_desc}: {detail}")]
    Invalid { name: String, source_desc: String, detail: String },
    #[error("{path}: {detail}")]
    File { path: String, detail: String },
    #[error("tensor \"{name}\" in {source_desc} holds {value} (element {index} of the slice read); weights must be finite (a corrupt or badly converted checkpoint)")]
    NonFinite { name: String, source_desc: String, index: usize, value: f32 },
    #[error(transparent)]
    Backend(#[from] crate::backend::BackendError),
}

/// `t` when every value is finite; otherwise [`LoadError::NonFinite`] naming tensor `name` of
/// `source_desc`. Sources run every slice they load through this, so a NaN or infinity in a
/// checkpoint is refused at load instead of surfacing as NaN logits.
pub fn finite(name: &str, source_desc: impl FnOnce() -> String, t: HostTensor) -> Result<HostTensor, LoadError> {
    match t.first_non_finite() {
        None => Ok(t),
        Some((index, value)) => Err(LoadError::NonFinite { name: name.to_string(), source_desc: source_desc(), index, value }),
    }
}

/// Where weights come from: a safetensors directory, a GGUF file, or memory (tests).
/// Implementations read only the requested slice.
pub trait WeightSource {
    /// The full shape of tensor `name` as stored.
    fn shape(&self, name: &str) -> Result<Vec<usize>, LoadError>;

    /// Reads `spec`'s slice of `name`, zero-padded as the spec says, in the stored float dtype
    /// (or f32 where the storage format must be dequantised).
    fn load(&self, name: &str, spec: &ShardSpec) -> Result<HostTensor, LoadError>;

    /// [`load`](Self::load), but a weight stored in a block format ([`DType::is_quantized`](crate::backend::DType::is_quantized))
    /// comes back in it, as stored, when the slice keeps whole blocks (rows; columns on block
    /// boundaries). Otherwise, and for sources without block formats, exactly `load`.
    fn load_stored(&self, name: &str, spec: &ShardSpec) -> Result<HostTensor, LoadError> {
        self.load(name, spec)
    }

    /// The dtype `name` is stored in when that is a block format (`None` otherwise, or when the
    /// source cannot say): what [`load_stored`](Self::load_stored) keeps where the slice allows.
    fn stored_block_dtype(&self, name: &str) -> Option<crate::backend::DType> {
        let _ = name;
        None
    }

    /// The dtype [`load`](Self::load) returns `name` in, read from the header (no data), for
    /// the memory plan of what a run holds. `None` when the source cannot say.
    fn loaded_dtype(&self, name: &str) -> Option<crate::backend::DType> {
        let _ = name;
        None
    }

    /// Reads a replicated tensor whole.
    fn load_full(&self, name: &str) -> Result<HostTensor, LoadError> {
        let shape = self.shape(name)?;
        self.load(name, &ShardSpec::full(Axis::Rows, shape.first().copied().unwrap_or(1)))
    }

    /// Checks the stored shape against what the config implies, before reading anything.
    fn expect_shape(&self, name: &str, expected: &[usize]) -> Result<(), LoadError> {
        let got = self.shape(name)?;
        if got != expected {
            return Err(LoadError::ShapeMismatch {
                name: name.to_string(),
                source_desc: self.describe(),
                expected: expected.to_vec(),
                got,
            });
        }
        Ok(())
    }

    /// For error messages: the file or directory.
    fn describe(&self) -> String;
}

/// Full tensors held in memory, keyed by name. Tests and the examples' random checkpoints use it.
#[derive(Debug, Default, Clone)]
pub struct InMemoryWeights {
    pub tensors: std::collections::BTreeMap<String, HostTensor>,
}

impl InMemoryWeights {
    pub fn insert(&mut self, name: impl Into<String>, t: HostTensor) {
        self.tensors.insert(name.into(), t);
    }

    /// Random f32 weights for `shapes` (uniform in `[-scale, scale]`; norm weights near 1), from a
    /// seeded generator: the random checkpoints of tests and examples. A large enough `scale`
    /// (~0.3) keeps greedy choices away from near-ties.
    pub fn random(shapes: &[(String, Vec<usize>)], seed: u64, scale: f32) -> Self {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        };
        let mut w = Self::default();
        for (name, shape) in shapes {
            let n: usize = shape.iter().product();
            let v: Vec<f32> =
                if name.contains("norm") { (0..n).map(|_| 1.0 + 0.1 * next()).collect() } else { (0..n).map(|_| scale * next()).collect() };
            w.insert(name.clone(), HostTensor { data: HostData::F32(v), shape: shape.clone() });
        }
        w
    }

    fn get(&self, name: &str) -> Result<&HostTensor, LoadError> {
        self.tensors
            .get(name)
            .ok_or_else(|| LoadError::MissingTensor { name: name.to_string(), source_desc: self.describe() })
    }
}

impl WeightSource for InMemoryWeights {
    fn shape(&self, name: &str) -> Result<Vec<usize>, LoadError> {
        Ok(self.get(name)?.shape.clone())
    }

    fn loaded_dtype(&self, name: &str) -> Option<crate::backend::DType> {
        self.get(name).ok().map(HostTensor::dtype)
    }

    /// Block-format tensors are decoded whole, then sliced (tests only: a file source decodes
    /// only its slice).
    fn load(&self, name: &str, spec: &ShardSpec) -> Result<HostTensor, LoadError> {
        let t = self.get(name)?;
        let decoded;
        let t = if t.dtype().is_quantized() {
            decoded = t.cast(crate::backend::DType::F32)?;
            &decoded
        } else {
            t
        };
        spec.slice(t).ok_or_else(|| LoadError::Invalid {
            name: name.to_string(),
            source_desc: self.describe(),
            detail: format!("slice {spec:?} does not fit shape {:?}", t.shape),
        })
    }

    fn load_stored(&self, name: &str, spec: &ShardSpec) -> Result<HostTensor, LoadError> {
        let t = self.get(name)?;
        match spec.slice(t) {
            Some(s) if t.dtype().is_quantized() => Ok(s),
            _ => self.load(name, spec),
        }
    }

    fn stored_block_dtype(&self, name: &str) -> Option<crate::backend::DType> {
        self.get(name).ok().map(HostTensor::dtype).filter(|d| d.is_quantized())
    }

    fn describe(&self) -> String {
        "in-memory weights".into()
    }
}

/// A source whose block-format weights are always decoded to f32 (the f32 path finetp keeps for
/// checking against references that compute in f32, such as HF's own GGUF load).
pub struct Dequantized(pub std::sync::Arc<dyn WeightSource + Send + Sync>);

impl WeightSource for Dequantized {
    fn shape(&self, name: &str) -> Result<Vec<usize>, LoadError> {
        self.0.shape(name)
    }

    fn load(&self, name: &str, spec: &ShardSpec) -> Result<HostTensor, LoadError> {
        self.0.load(name, spec)
    }

    fn loaded_dtype(&self, name: &str) -> Option<crate::backend::DType> {
        self.0.loaded_dtype(name)
    }

    fn describe(&self) -> String {
        format!("{} (dequantised)", self.0.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_tensors_slice_on_block_boundaries_only() {
        use crate::backend::DType;
        // [2, 64] of Q8_0: 2 blocks per row; block b of row r has scale bytes (r, b).
        let bytes: Vec<u8> = (0..2u8).flat_map(|r| (0..2u8).flat_map(move |b| std::iter::once(r).chain(std::iter::once(b)).chain([0u8; 32]))).collect();
        let full = HostTensor::new(HostData::Quantized { dtype: DType::Q8_0, bytes }, &[2, 64]).unwrap();
        let c = ShardSpec::even(Axis::Cols, 64, 1, 2).slice(&full).unwrap();
        let HostData::Quantized { bytes, .. } = &c.data else { panic!() };
        assert_eq!((c.shape.as_slice(), bytes.len(), bytes[0], bytes[1], bytes[34], bytes[35]), (&[2, 32][..], 68, 0, 1, 1, 1));
        let r = ShardSpec::vocab(2, 4, 1, 2).slice(&full).unwrap();
        let HostData::Quantized { bytes, .. } = &r.data else { panic!() };
        assert_eq!((r.shape.as_slice(), bytes.len(), bytes.iter().all(|&b| b == 0)), (&[2, 64][..], 136, true));
        assert!(ShardSpec::range(Axis::Cols, 16, 32).slice(&full).is_none(), "cuts a block");
        assert!(HostTensor::new(HostData::Quantized { dtype: DType::Q8_0, bytes: vec![0; 34] }, &[2, 16]).is_err(), "rows of half a block");
        let mut w = InMemoryWeights::default();
        w.insert("w", full);
        assert_eq!(w.load_stored("w", &ShardSpec::range(Axis::Cols, 16, 32)).unwrap().dtype(), DType::F32, "decoded when a block would be cut");
        assert_eq!(w.load_stored("w", &ShardSpec::range(Axis::Cols, 32, 32)).unwrap().dtype(), DType::Q8_0);
        assert_eq!(w.load("w", &ShardSpec::range(Axis::Cols, 32, 32)).unwrap().dtype(), DType::F32);
    }

    #[test]
    fn vocab_shards_cover_the_vocabulary_and_pad_the_tail() {
        // vocab 100 padded to 128, 4 members of 32 rows.
        let shards: Vec<_> = (0..4).map(|r| ShardSpec::vocab(100, 128, r, 4)).collect();
        assert_eq!(shards[0], ShardSpec { axis: Axis::Rows, start: 0, len: 32, padded_len: 32 });
        assert_eq!(shards[3], ShardSpec { axis: Axis::Rows, start: 96, len: 4, padded_len: 32 });
        assert_eq!(shards.iter().map(|s| s.len).sum::<usize>(), 100);
    }

    #[test]
    fn slices_rows_and_columns() {
        let full = HostTensor::f32((0..12).map(|x| x as f32).collect(), &[3, 4]).unwrap();
        let c = ShardSpec::even(Axis::Cols, 4, 1, 2).slice(&full).unwrap();
        assert_eq!(c.shape, vec![3, 2]);
        assert_eq!(c.to_f32_vec().unwrap(), vec![2., 3., 6., 7., 10., 11.]);
        let r = ShardSpec::vocab(3, 4, 1, 2).slice(&full).unwrap();
        assert_eq!(r.to_f32_vec().unwrap(), vec![8., 9., 10., 11., 0., 0., 0., 0.]);
        assert!(ShardSpec::even(Axis::Cols, 8, 1, 2).slice(&full).is_none());
    }
}
