//! A GGUF (v2/v3, little-endian) reader over a memory map. Every read is bounds-checked, so a
//! truncated or corrupt file is an error naming the file, never a panic.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::GgmlType;
use crate::LoaderError;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Array(Vec<MetaValue>),
}

impl MetaValue {
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            MetaValue::Int(i) => u64::try_from(*i).ok(),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            MetaValue::Float(f) => Some(*f),
            MetaValue::Int(i) => Some(*i as f64),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// Where one tensor's data sits.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// GGUF order: `dims[0]` is the fastest-varying (input features of a linear).
    pub dims: Vec<usize>,
    pub ty: GgmlType,
    /// Absolute byte offset in the file.
    pub offset: usize,
    pub bytes: usize,
}

/// An open GGUF file.
pub struct GgufFile {
    pub path: PathBuf,
    map: Mmap,
    pub metadata: BTreeMap<String, MetaValue>,
    pub tensors: BTreeMap<String, TensorInfo>,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
    /// Metadata array elements read so far (bounded by [`MAX_ARRAY_ELEMENTS`]).
    elements: usize,
}

/// The most metadata array elements a file may hold, over all its arrays: each is a
/// [`MetaValue`] of some 32 bytes in memory, so a hostile file of 2^31 one-byte elements would
/// ask for 64 GiB. A 256k-token vocabulary with its merges, scores and types is about 1M.
const MAX_ARRAY_ELEMENTS: usize = 1 << 24;

/// How deep metadata arrays may nest. GGUF writers nest at most one level (arrays of strings or
/// numbers); the limit keeps a hostile file from recursing the reader off its stack.
const MAX_ARRAY_DEPTH: usize = 4;

impl<'a> Reader<'a> {
    fn err(&self, detail: impl Into<String>) -> LoaderError {
        LoaderError::Gguf { path: self.path.display().to_string(), detail: detail.into() }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], LoaderError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or_else(|| {
            self.err(format!("truncated: needs {n} bytes at offset {}, the file has {}", self.pos, self.buf.len()))
        })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, LoaderError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, LoaderError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn len(&mut self, what: &str) -> Result<usize, LoaderError> {
        let n = self.u64()?;
        usize::try_from(n).ok().filter(|&n| n <= self.buf.len()).ok_or_else(|| self.err(format!("{what} length {n} exceeds the file")))
    }
    fn string(&mut self) -> Result<String, LoaderError> {
        let n = self.len("string")?;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.err("a string is not UTF-8"))
    }
    fn value(&mut self, ty: u32, depth: usize) -> Result<MetaValue, LoaderError> {
        let le = |b: &[u8]| -> [u8; 8] {
            let mut a = [0u8; 8];
            a[..b.len()].copy_from_slice(b);
            a
        };
        Ok(match ty {
            0 => MetaValue::Int(i64::from(self.take(1)?[0])),
            1 => MetaValue::Int(i64::from(self.take(1)?[0] as i8)),
            2 => MetaValue::Int(i64::from(u16::from_le_bytes(self.take(2)?.try_into().expect("2")))),
            3 => MetaValue::Int(i64::from(i16::from_le_bytes(self.take(2)?.try_into().expect("2")))),
            4 => MetaValue::Int(i64::from(self.u32()?)),
            5 => MetaValue::Int(i64::from(self.u32()? as i32)),
            6 => MetaValue::Float(f64::from(f32::from_le_bytes(self.take(4)?.try_into().expect("4")))),
            7 => MetaValue::Bool(self.take(1)?[0] != 0),
            8 => MetaValue::Str(self.string()?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.err(format!("metadata arrays nested deeper than {MAX_ARRAY_DEPTH} levels")));
                }
                let ety = self.u32()?;
                let n = self.len("array")?;
                // Every element takes at least one byte: a claimed count reserves no more than
                // the file could hold (and at most 64k up front; the vector grows past that).
                let mut v = Vec::with_capacity(n.min(self.buf.len() - self.pos).min(1 << 16));
                self.elements = self.elements.saturating_add(n);
                if self.elements > MAX_ARRAY_ELEMENTS {
                    return Err(self.err(format!("metadata arrays hold more than {MAX_ARRAY_ELEMENTS} elements in all")));
                }
                for _ in 0..n {
                    v.push(self.value(ety, depth + 1)?);
                }
                MetaValue::Array(v)
            }
            10 => MetaValue::Int(self.u64()? as i64),
            11 => MetaValue::Int(i64::from_le_bytes(le(self.take(8)?))),
            12 => MetaValue::Float(f64::from_le_bytes(le(self.take(8)?))),
            t => return Err(self.err(format!("unknown metadata value type {t}"))),
        })
    }
}

/// A GGUF file's metadata and tensor table.
pub type Tables = (BTreeMap<String, MetaValue>, BTreeMap<String, TensorInfo>);

/// Parses the header, metadata and tensor table of the GGUF bytes `buf` (`path` names them in
/// errors), checking every tensor's extent against `buf`; public for the fuzz targets.
pub fn parse_tables(buf: &[u8], path: &Path) -> Result<Tables, LoaderError> {
    let mut r = Reader { buf, pos: 0, path, elements: 0 };
    if r.take(4)? != b"GGUF" {
        return Err(r.err("bad magic (expected \"GGUF\")"));
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return Err(r.err(format!("unsupported GGUF version {version} (2 and 3 are)")));
    }
    let (n_tensors, n_kv) = (r.len("tensor count")?, r.len("metadata count")?);
    let mut metadata = BTreeMap::new();
    for _ in 0..n_kv {
        let key = r.string()?;
        let ty = r.u32()?;
        let value = r.value(ty, 0)?;
        if metadata.insert(key.clone(), value).is_some() {
            return Err(r.err(format!("metadata key {key:?} appears twice")));
        }
    }
    let mut infos = Vec::with_capacity(n_tensors.min(1 << 16));
    for _ in 0..n_tensors {
        let name = r.string()?;
        let nd = r.u32()? as usize;
        if nd > 4 {
            return Err(r.err(format!("tensor {name} has {nd} dimensions")));
        }
        let dims = (0..nd).map(|_| r.len("dimension")).collect::<Result<Vec<_>, _>>()?;
        let ty_id = r.u32()?;
        let rel = r.u64()? as usize;
        infos.push((name, dims, ty_id, rel));
    }
    let align = metadata.get("general.alignment").and_then(MetaValue::as_u64).unwrap_or(32).max(1) as usize;
    let data_start = r.pos.div_ceil(align) * align;
    let mut tensors = BTreeMap::new();
    for (name, dims, ty_id, rel) in infos {
        let ty = GgmlType::from_id(ty_id);
        let numel = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or_else(|| r.err(format!("tensor {name}: dimensions {dims:?} overflow")))?;
        let bytes = ty.bytes_for(numel).ok_or_else(|| r.err(format!("tensor {name}: {numel} elements do not fill whole {ty:?} blocks, or overflow")))?;
        let end = data_start.checked_add(rel).and_then(|o| o.checked_add(bytes));
        if end.is_none_or(|e| e > buf.len()) {
            return Err(r.err(format!(
                "truncated: tensor {name} needs {bytes} bytes at offset {rel} past the data start {data_start}, but the file has {}",
                buf.len()
            )));
        }
        let offset = data_start + rel;
        if tensors.contains_key(&name) {
            return Err(r.err(format!("tensor {name} appears twice in the tensor table")));
        }
        tensors.insert(name, TensorInfo { dims, ty, offset, bytes });
    }
    Ok((metadata, tensors))
}

impl GgufFile {
    /// Maps and parses the header, metadata and tensor table (no tensor data is read).
    pub fn open(path: &Path) -> Result<Self, LoaderError> {
        let io = |e: std::io::Error| LoaderError::Io { path: path.display().to_string(), message: e.to_string() };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the map is read-only; finetp never writes to checkpoint files while they are open.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        let (metadata, tensors) = parse_tables(&map, path)?;
        Ok(Self { path: path.to_path_buf(), map, metadata, tensors })
    }

    /// The raw bytes of a tensor (bounds were checked at open).
    pub fn data(&self, t: &TensorInfo) -> &[u8] {
        &self.map[t.offset..t.offset + t.bytes]
    }

    pub fn meta_u64(&self, key: &str) -> Option<u64> {
        self.metadata.get(key).and_then(MetaValue::as_u64)
    }

    pub fn meta_f64(&self, key: &str) -> Option<f64> {
        self.metadata.get(key).and_then(MetaValue::as_f64)
    }

    pub fn meta_str(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).and_then(MetaValue::as_str)
    }
}
