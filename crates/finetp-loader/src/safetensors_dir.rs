//! A Hugging Face safetensors checkpoint (one file or sharded with an index), memory-mapped;
//! loads copy out only the requested slice, in the stored dtype (block-scaled FP8 weights
//! dequantised to f32, see [`Fp8BlockScale`]).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use finetp_core::backend::{DType, HostData, HostTensor};
use finetp_core::shard::{Axis, LoadError, ShardSpec, WeightSource};
use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::LoaderError;
use crate::fp8_blocks::Fp8BlockScale;

struct Entry {
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Absolute byte range in the file.
    start: usize,
}

pub struct SafetensorsDir {
    dir: PathBuf,
    files: Vec<(PathBuf, Mmap)>,
    tensors: HashMap<String, Entry>,
    fp8: Option<Fp8BlockScale>,
}

impl SafetensorsDir {
    /// Maps every `*.safetensors` file of `dir` (those listed by `model.safetensors.index.json`
    /// when present) and reads their headers.
    pub fn open(dir: &Path) -> Result<Self, LoaderError> {
        let io = |p: &Path, e: String| LoaderError::Io { path: p.display().to_string(), message: e };
        let index = dir.join("model.safetensors.index.json");
        let mut names: Vec<PathBuf> = if index.is_file() {
            let text = std::fs::read_to_string(&index).map_err(|e| io(&index, e.to_string()))?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| io(&index, format!("not valid JSON: {e}")))?;
            let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| io(&index, "no \"weight_map\" object".into()))?;
            let mut files: Vec<PathBuf> = map.values().filter_map(|f| f.as_str()).map(|f| dir.join(f)).collect();
            files.sort();
            files.dedup();
            files
        } else {
            let rd = std::fs::read_dir(dir).map_err(|e| io(dir, e.to_string()))?;
            rd.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "safetensors")).collect()
        };
        names.sort();
        if names.is_empty() {
            return Err(io(dir, "no *.safetensors files".into()));
        }
        let mut files: Vec<(PathBuf, Mmap)> = Vec::new();
        let mut tensors = HashMap::new();
        for (fi, path) in names.into_iter().enumerate() {
            let f = File::open(&path).map_err(|e| io(&path, e.to_string()))?;
            // SAFETY: read-only map of a checkpoint file that finetp never modifies.
            let map = unsafe { Mmap::map(&f) }.map_err(|e| io(&path, e.to_string()))?;
            let (n, meta) = SafeTensors::read_metadata(&map).map_err(|e| io(&path, format!("not a valid safetensors file (truncated?): {e}")))?;
            let base = 8 + n;
            for (name, info) in meta.tensors() {
                let (s, e) = info.data_offsets;
                if base.checked_add(e).is_none_or(|end| end > map.len()) || s > e {
                    return Err(io(&path, format!("truncated: tensor {name} spans bytes {s}..{e} of the data, which starts at byte {base} of a file of {}", map.len())));
                }
                let entry = Entry { file: fi, dtype: info.dtype, shape: info.shape.clone(), start: base + s };
                if let Some(first) = tensors.insert(name.clone(), entry) {
                    let first = if first.file == fi { &path } else { &files[first.file].0 };
                    return Err(io(&path, format!("tensor {name} is also in {} (each tensor must be in exactly one file)", first.display())));
                }
            }
            files.push((path, map));
        }
        Ok(Self { dir: dir.to_path_buf(), files, tensors, fp8: None })
    }

    /// Declares the checkpoint's FP8 block size (config.json's `quantization_config`): its e4m3
    /// tensors then load as f32, each element times its block's `<name>_scale_inv`.
    pub fn with_fp8_blocks(mut self, fp8: Option<Fp8BlockScale>) -> Self {
        self.fp8 = fp8;
        self
    }

    fn entry(&self, name: &str) -> Result<&Entry, LoadError> {
        self.tensors.get(name).ok_or_else(|| LoadError::MissingTensor { name: name.to_string(), source_desc: self.describe() })
    }

    /// `spec`'s slice of the `[rows, cols]` e4m3 tensor `name` (bytes `q`), dequantised to f32
    /// with its `<name>_scale_inv` block scales.
    fn load_fp8(&self, name: &str, e: &Entry, q: &[u8], spec: &ShardSpec) -> Result<HostTensor, Fp8Error> {
        let fp8 = self.fp8.ok_or("an F8_E4M3 tensor, but config.json has no FP8 quantization_config with a weight_block_size")?;
        let &[rows, cols] = e.shape.as_slice() else { return Err(format!("an F8_E4M3 tensor of shape {:?} (2-D weights are block-scaled)", e.shape).into()) };
        let scale_name = format!("{name}_scale_inv");
        let grid = fp8.grid(rows, cols);
        let se = self.tensors.get(&scale_name).ok_or_else(|| format!("an F8_E4M3 weight without its block scales \"{scale_name}\""))?;
        if se.shape != grid {
            return Err(format!("{scale_name} has shape {:?}; {:?} blocks of {}x{} imply {grid:?}", se.shape, e.shape, fp8.block_rows, fp8.block_cols).into());
        }
        // A scale's own load error (a NaN scale, say) already names its tensor and file: passed
        // on as it is, not wrapped in the weight's.
        let scale = self.load(&scale_name, &ShardSpec::full(Axis::Rows, grid[0])).map_err(Fp8Error::Scale)?;
        let scale = scale.to_f32_vec().ok_or_else(|| format!("{scale_name} is not a float tensor"))?;
        let mut out = Vec::with_capacity(spec.padded_len * if spec.axis == Axis::Rows { cols } else { rows });
        match spec.axis {
            Axis::Rows => {
                fp8.dequant_into(q, cols, &scale, (spec.start, spec.start + spec.len), (0, cols), 0, &mut out);
                out.resize(spec.padded_len * cols, 0.0);
            }
            Axis::Cols => fp8.dequant_into(q, cols, &scale, (0, rows), (spec.start, spec.start + spec.len), spec.padded_len - spec.len, &mut out),
        }
        HostTensor::new(HostData::F32(out), &spec.sliced_shape(&e.shape)).map_err(|e| Fp8Error::Weight(e.to_string()))
    }
}

/// Why an FP8 weight did not load: its own problem, or its scale tensor's load error.
enum Fp8Error {
    Weight(String),
    Scale(LoadError),
}

impl From<String> for Fp8Error {
    fn from(d: String) -> Self {
        Fp8Error::Weight(d)
    }
}

impl From<&str> for Fp8Error {
    fn from(d: &str) -> Self {
        Fp8Error::Weight(d.to_string())
    }
}

/// Copies `len` elements of `es` bytes from `src` at element `at` to the end of `dst`.
fn push_elems(dst: &mut Vec<u8>, src: &[u8], at: usize, len: usize, es: usize) {
    dst.extend_from_slice(&src[at * es..(at + len) * es]);
}

fn to_host(dtype: Dtype, bytes: &[u8], shape: &[usize]) -> Option<HostTensor> {
    let data = match dtype {
        Dtype::F32 => HostData::F32(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
        Dtype::BF16 => HostData::BF16(bytes.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]])).collect()),
        Dtype::F16 => HostData::F16(bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]])).collect()),
        _ => return None,
    };
    HostTensor::new(data, shape).ok()
}

impl WeightSource for SafetensorsDir {
    fn loaded_dtype(&self, name: &str) -> Option<DType> {
        match self.tensors.get(name)?.dtype {
            Dtype::F32 => Some(DType::F32),
            Dtype::BF16 => Some(DType::BF16),
            Dtype::F16 => Some(DType::F16),
            Dtype::F8_E4M3 if self.fp8.is_some() => Some(DType::F32),
            _ => None,
        }
    }

    fn shape(&self, name: &str) -> Result<Vec<usize>, LoadError> {
        Ok(self.entry(name)?.shape.clone())
    }

    fn load(&self, name: &str, spec: &ShardSpec) -> Result<HostTensor, LoadError> {
        let e = self.entry(name)?;
        let (path, map) = &self.files[e.file];
        let invalid = |detail: String| LoadError::Invalid { name: name.to_string(), source_desc: path.display().to_string(), detail };
        let es = match e.dtype {
            Dtype::F32 => 4,
            Dtype::BF16 | Dtype::F16 => 2,
            Dtype::F8_E4M3 => 1,
            other => return Err(invalid(format!("dtype {other:?} is not supported (F32, BF16, F16 and block-scaled F8_E4M3 are)"))),
        };
        let (rows, cols) = match e.shape.as_slice() {
            [c] => (*c, 1),
            [r, c] => (*r, *c),
            s => return Err(invalid(format!("{}-D tensor {s:?}", s.len()))),
        };
        let axis_len = if spec.axis == Axis::Rows { rows } else { cols };
        if spec.start + spec.len > axis_len || (spec.axis == Axis::Cols && e.shape.len() != 2) {
            return Err(invalid(format!("slice {spec:?} does not fit shape {:?}", e.shape)));
        }
        let data = &map[e.start..e.start + rows * cols * es];
        if e.dtype == Dtype::F8_E4M3 {
            let host = self.load_fp8(name, e, data, spec).map_err(|e| match e {
                Fp8Error::Scale(l) => l,
                Fp8Error::Weight(d) => invalid(d),
            })?;
            return finetp_core::shard::finite(name, || path.display().to_string(), host);
        }
        let mut out = Vec::new();
        match spec.axis {
            Axis::Rows => {
                push_elems(&mut out, data, spec.start * cols, spec.len * cols, es);
                out.resize(spec.padded_len * cols * es, 0);
            }
            Axis::Cols => {
                for r in 0..rows {
                    push_elems(&mut out, data, r * cols + spec.start, spec.len, es);
                    out.resize(out.len() + (spec.padded_len - spec.len) * es, 0);
                }
            }
        }
        let host = to_host(e.dtype, &out, &spec.sliced_shape(&e.shape)).ok_or_else(|| invalid("conversion failed".into()))?;
        finetp_core::shard::finite(name, || path.display().to_string(), host)
    }

    fn describe(&self) -> String {
        self.dir.display().to_string()
    }
}
