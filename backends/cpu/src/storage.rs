//! CPU buffers and the memory half of the backend contract.

use std::sync::Arc;

use finetp_core::backend::{Backend, BackendError, CapturedGraph, DType, HostData, HostTensor, Tensor};
use half::{bf16, f16};

use crate::graph;

/// Host memory of one CPU tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum CpuStorage {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    U32(Vec<u32>),
}

/// During graph capture a dropped tensor's memory moves into the recording instead of being
/// freed: recorded calls still point at it (see [`crate::graph`]).
impl Drop for CpuStorage {
    fn drop(&mut self) {
        if graph::capturing() && !self.is_empty() {
            let s = std::mem::replace(self, CpuStorage::U32(Vec::new()));
            drop(graph::keep(s));
        }
    }
}

impl CpuStorage {
    pub fn zeros(dtype: DType, n: usize) -> Self {
        match dtype {
            DType::F32 => CpuStorage::F32(vec![0.0; n]),
            DType::F16 => CpuStorage::F16(vec![f16::ZERO; n]),
            DType::BF16 => CpuStorage::BF16(vec![bf16::ZERO; n]),
            DType::U32 => CpuStorage::U32(vec![0; n]),
        }
    }

    pub fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F16(_) => DType::F16,
            CpuStorage::BF16(_) => DType::BF16,
            CpuStorage::U32(_) => DType::U32,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            CpuStorage::F32(v) => v.len(),
            CpuStorage::F16(v) => v.len(),
            CpuStorage::BF16(v) => v.len(),
            CpuStorage::U32(v) => v.len(),
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
            .map_err(|e| BackendError::Device(format!("cannot start CPU thread pool: {e}")))?;
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

impl Backend for CpuBackend {
    type Buffer = CpuStorage;
    const NAME: &'static str = "cpu";

    fn describe(&self) -> String {
        format!("cpu ({} threads)", self.threads())
    }

    /// While capturing, the new tensor is also zeroed again at every replay, so code that
    /// accumulates into a fresh buffer behaves as it does eagerly.
    fn zeros(&self, shape: &[usize], dtype: DType) -> Result<CpuTensor, BackendError> {
        let mut t = Tensor::from_parts(CpuStorage::zeros(dtype, shape.iter().product()), shape.to_vec(), dtype);
        if graph::capturing() {
            self.fill_zero(&mut t)?;
        }
        Ok(t)
    }

    fn upload(&self, host: &HostTensor) -> Result<CpuTensor, BackendError> {
        if graph::capturing() {
            return Err(graph::host_sync("upload"));
        }
        let buf = match &host.data {
            HostData::F32(v) => CpuStorage::F32(v.clone()),
            HostData::F16(v) => CpuStorage::F16(v.clone()),
            HostData::BF16(v) => CpuStorage::BF16(v.clone()),
            HostData::U32(v) => CpuStorage::U32(v.clone()),
        };
        Ok(Tensor::from_parts(buf, host.shape.clone(), host.dtype()))
    }

    fn download(&self, t: &CpuTensor) -> Result<HostTensor, BackendError> {
        if graph::capturing() {
            return Err(graph::host_sync("download"));
        }
        let data = match t.buffer() {
            CpuStorage::F32(v) => HostData::F32(v.clone()),
            CpuStorage::F16(v) => HostData::F16(v.clone()),
            CpuStorage::BF16(v) => HostData::BF16(v.clone()),
            CpuStorage::U32(v) => HostData::U32(v.clone()),
        };
        HostTensor::new(data, t.shape())
    }

    fn synchronize(&self) -> Result<(), BackendError> {
        Ok(())
    }

    fn copy_block(
        &self,
        src: &CpuTensor,
        src_row: usize,
        src_col: usize,
        dst: &mut CpuTensor,
        dst_row: usize,
        dst_col: usize,
        rows: usize,
        cols: usize,
    ) -> Result<(), BackendError> {
        self.launch("copy_block", &[src], &mut [dst], move |_, i, o| copy_block(i[0], src_row, src_col, o[0], dst_row, dst_col, rows, cols))
    }

    fn fill_zero(&self, t: &mut CpuTensor) -> Result<(), BackendError> {
        self.launch("fill_zero", &[], &mut [t], |_, _, o| {
            o[0].buffer_mut().as_bytes_mut().fill(0);
            Ok(())
        })
    }

    fn write(&self, t: &mut CpuTensor, host: &HostTensor) -> Result<(), BackendError> {
        if graph::capturing() {
            return Err(graph::host_sync("write"));
        }
        if host.shape != t.shape() || host.dtype() != t.dtype() {
            return Err(BackendError::Shape(format!("write: host {:?} {} into a tensor {:?} {}", host.shape, host.dtype(), t.shape(), t.dtype())));
        }
        match (&host.data, t.buffer_mut()) {
            (HostData::F32(s), CpuStorage::F32(d)) => d.copy_from_slice(s),
            (HostData::F16(s), CpuStorage::F16(d)) => d.copy_from_slice(s),
            (HostData::BF16(s), CpuStorage::BF16(d)) => d.copy_from_slice(s),
            (HostData::U32(s), CpuStorage::U32(d)) => d.copy_from_slice(s),
            _ => return Err(BackendError::Shape("write: storage and tensor dtype disagree".into())),
        }
        Ok(())
    }

    fn begin_capture(&self) -> Result<(), BackendError> {
        graph::begin()
    }

    fn end_capture(&self) -> Result<Box<dyn CapturedGraph>, BackendError> {
        Ok(Box::new(graph::end()?))
    }
}

#[allow(clippy::too_many_arguments)]
fn copy_block(src: &CpuTensor, src_row: usize, src_col: usize, dst: &mut CpuTensor, dst_row: usize, dst_col: usize, rows: usize, cols: usize) -> Result<(), BackendError> {
    finetp_core::backend::checks::copy_block(src, src_row, src_col, dst, dst_row, dst_col, rows, cols)?;
    let (sw, dw) = (src.row_len(), dst.row_len());
    let es = src.dtype().size_in_bytes();
    let s = src.buffer().as_bytes();
    let d = dst.buffer_mut().as_bytes_mut();
    for r in 0..rows {
        let so = ((src_row + r) * sw + src_col) * es;
        let doff = ((dst_row + r) * dw + dst_col) * es;
        d[doff..doff + cols * es].copy_from_slice(&s[so..so + cols * es]);
    }
    Ok(())
}
