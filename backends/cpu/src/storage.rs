//! CPU buffers and the memory half of the backend contract.

use std::sync::Arc;

use finetp_core::backend::{BackendError, DType, HostData, Tensor};
use half::{bf16, f16};

use crate::graph::recording;

/// Host memory of one CPU tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum CpuStorage {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    U32(Vec<u32>),
    /// Whole blocks of a block format (GGUF's layout, see `finetp_core::backend::quant`): only
    /// GEMM weights and embedding tables are held this way.
    Blocks { dtype: DType, bytes: Vec<u8> },
}

/// During graph capture a dropped tensor's memory moves into the recording instead of being
/// freed: recorded calls still point at it (see [`crate::graph`]).
impl Drop for CpuStorage {
    fn drop(&mut self) {
        if recording::capturing() && !self.is_empty() {
            let s = std::mem::replace(self, CpuStorage::U32(Vec::new()));
            drop(recording::keep(Box::new(s)));
        }
    }
}

impl CpuStorage {
    /// `n` zeros of `dtype`; a dtype the CPU backend does not store is
    /// [`BackendError::Unsupported`].
    pub fn zeros(dtype: DType, n: usize) -> Result<Self, BackendError> {
        Ok(match dtype {
            DType::F32 => CpuStorage::F32(vec![0.0; n]),
            DType::F16 => CpuStorage::F16(vec![f16::ZERO; n]),
            DType::BF16 => CpuStorage::BF16(vec![bf16::ZERO; n]),
            DType::U32 => CpuStorage::U32(vec![0; n]),
            other => return Err(BackendError::Unsupported(format!("the cpu backend does not store {other} tensors"))),
        })
    }

    /// Takes host data as it is (no copy).
    pub fn from_host(data: HostData) -> Self {
        match data {
            HostData::F32(v) => CpuStorage::F32(v),
            HostData::F16(v) => CpuStorage::F16(v),
            HostData::BF16(v) => CpuStorage::BF16(v),
            HostData::U32(v) => CpuStorage::U32(v),
            HostData::Quantized { dtype, bytes } => CpuStorage::Blocks { dtype, bytes },
        }
    }

    /// Hands the data to the host (no copy).
    pub fn into_host(mut self) -> HostData {
        // `CpuStorage` has a `Drop`, so its fields are taken, leaving an empty vector behind.
        match &mut self {
            CpuStorage::F32(v) => HostData::F32(std::mem::take(v)),
            CpuStorage::F16(v) => HostData::F16(std::mem::take(v)),
            CpuStorage::BF16(v) => HostData::BF16(std::mem::take(v)),
            CpuStorage::U32(v) => HostData::U32(std::mem::take(v)),
            CpuStorage::Blocks { dtype, bytes } => HostData::Quantized { dtype: *dtype, bytes: std::mem::take(bytes) },
        }
    }

    pub fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F16(_) => DType::F16,
            CpuStorage::BF16(_) => DType::BF16,
            CpuStorage::U32(_) => DType::U32,
            CpuStorage::Blocks { dtype, .. } => *dtype,
        }
    }

    /// Elements (for a block format: blocks × elements per block).
    pub fn len(&self) -> usize {
        match self {
            CpuStorage::F32(v) => v.len(),
            CpuStorage::F16(v) => v.len(),
            CpuStorage::BF16(v) => v.len(),
            CpuStorage::U32(v) => v.len(),
            CpuStorage::Blocks { dtype, bytes } => bytes.len() / dtype.block_bytes() * dtype.block_elems(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The data as f32, or a dtype error naming `op`.
    pub fn as_f32(&self, op: &'static str) -> Result<&[f32], BackendError> {
        match self {
            CpuStorage::F32(v) => Ok(v),
            other => Err(BackendError::DType { op, expected: "f32", got: other.dtype() }),
        }
    }

    pub fn as_f32_mut(&mut self, op: &'static str) -> Result<&mut [f32], BackendError> {
        match self {
            CpuStorage::F32(v) => Ok(v),
            other => Err(BackendError::DType { op, expected: "f32", got: other.dtype() }),
        }
    }

    pub fn as_u32(&self, op: &'static str) -> Result<&[u32], BackendError> {
        match self {
            CpuStorage::U32(v) => Ok(v),
            other => Err(BackendError::DType { op, expected: "u32", got: other.dtype() }),
        }
    }

    pub fn as_u32_mut(&mut self, op: &'static str) -> Result<&mut [u32], BackendError> {
        match self {
            CpuStorage::U32(v) => Ok(v),
            other => Err(BackendError::DType { op, expected: "u32", got: other.dtype() }),
        }
    }

    /// Raw bytes, for dtype-agnostic copies (collectives, copy_block).
    pub fn as_bytes(&self) -> &[u8] {
        fn b<T: bytemuck::Pod>(v: &[T]) -> &[u8] {
            bytemuck::cast_slice(v)
        }
        match self {
            CpuStorage::F32(v) => b(v),
            CpuStorage::F16(v) => b(v),
            CpuStorage::BF16(v) => b(v),
            CpuStorage::U32(v) => b(v),
            CpuStorage::Blocks { bytes, .. } => bytes,
        }
    }

    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        fn b<T: bytemuck::Pod>(v: &mut [T]) -> &mut [u8] {
            bytemuck::cast_slice_mut(v)
        }
        match self {
            CpuStorage::F32(v) => b(v),
            CpuStorage::F16(v) => b(v),
            CpuStorage::BF16(v) => b(v),
            CpuStorage::U32(v) => b(v),
            CpuStorage::Blocks { bytes, .. } => bytes,
        }
    }
}

/// One CPU "device": a rank's own rayon pool. Ranks are threads of one process; giving each
/// its own pool, sized so the ranks together use the machine's cores, keeps one rank's GEMM from
/// starving another's.
#[derive(Clone)]
pub struct CpuBackend {
    pool: Arc<rayon::ThreadPool>,
}

impl CpuBackend {
    /// A device with `threads` worker threads (at least 1).
    pub fn new(threads: usize) -> Result<Self, BackendError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("finetp-cpu-{i}"))
            .build()
            .map_err(|e| BackendError::device("cannot start the CPU thread pool", e))?;
        Ok(Self { pool: Arc::new(pool) })
    }

    /// Threads per rank so that `ranks` ranks share the machine's cores.
    pub fn threads_per_rank(ranks: usize) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / ranks.max(1)).max(1)
    }

    pub fn pool(&self) -> &rayon::ThreadPool {
        &self.pool
    }

    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }
}

impl std::fmt::Debug for CpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CpuBackend({} threads)", self.threads())
    }
}

/// Shorthand for a CPU tensor.
pub type CpuTensor = Tensor<CpuBackend>;
