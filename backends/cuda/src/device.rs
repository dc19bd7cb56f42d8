//! Opening a rank's GPU and the [`Backend`] half of the contract: memory, copies, sync points.

use std::ffi::c_void;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::sys::{self as cu, CUdeviceptr};
use cudarc::driver::{CudaContext, DriverError};
use finetp_backend_cpu::CpuBackend;
use finetp_core::backend::{Backend, BackendError, Block, CapturedGraph, Collective, CommError, DType, DeviceSlot, GroupSpec, HostData, HostTensor, Rendezvous, Tensor, checks};

use crate::buffer::{Alloc, CudaBuffer, Shared, State};
use crate::local::LocalHub;
use crate::placement::{Placement, placement};
use crate::runtime::{check_libraries, device_count, driver_err};

/// One rank's GPU: its context, stream, kernels and cuBLASLt handle. Every call is enqueued on
/// the stream; `download` and `synchronize` are the sync points. Cheap to clone.
#[derive(Clone)]
pub struct CudaBackend {
    pub(crate) shared: Arc<Shared>,
    pub(crate) placement: Placement,
    pub(crate) slot: DeviceSlot,
    /// The hubs of this rank's single-GPU groups (the capture is coordinated on the widest).
    pub(crate) hubs: Arc<Hubs>,
    cpu: Arc<OnceLock<CpuBackend>>,
}

/// The single-GPU groups a rank has joined: each hub and the rank's place in it.
pub(crate) type Hubs = Mutex<Vec<(Arc<LocalHub>, usize)>>;

fn dev(what: &str) -> impl FnOnce(DriverError) -> BackendError + '_ {
    move |e| driver_err(what, e)
}

impl CudaBackend {
    pub(crate) fn bind(&self) -> Result<(), BackendError> {
        self.shared.ctx.bind_to_thread().map_err(dev("cuCtxSetCurrent"))
    }

    pub(crate) fn stream(&self) -> cu::CUstream {
        self.shared.raw_stream()
    }

    /// The CPU reference, for `moe_route` (run on the host, see `kernels.rs`).
    pub(crate) fn cpu(&self) -> Result<&CpuBackend, BackendError> {
        if let Some(c) = self.cpu.get() {
            return Ok(c);
        }
        let c = CpuBackend::new(1)?;
        Ok(self.cpu.get_or_init(|| c))
    }

    /// Counts one enqueued call toward a running capture.
    pub(crate) fn enqueued(&self) {
        if let Some((n, _)) = self.shared.state().capture.as_mut() {
            *n += 1;
        }
    }

    pub(crate) fn capturing(&self) -> bool {
        self.shared.state().capture.is_some()
    }

    /// Refuses `what` during a capture: it needs the host, which a replay would not redo.
    pub(crate) fn no_host_during_capture(&self, what: &str) -> Result<(), BackendError> {
        if self.capturing() {
            return Err(BackendError::Unsupported(format!("{what} needs the host, which a CUDA graph cannot capture")));
        }
        Ok(())
    }

    /// `bytes` of uninitialised device memory.
    pub(crate) fn alloc(&self, bytes: usize) -> Result<CudaBuffer, BackendError> {
        if bytes == 0 {
            return Ok(CudaBuffer { alloc: Alloc { ptr: 0, pooled: false }, bytes, shared: self.shared.clone() });
        }
        self.bind()?;
        let pooled = self.shared.pools && !self.capturing();
        // SAFETY: an allocation on this rank's context (stream-ordered on its stream).
        let r = unsafe {
            if pooled {
                cudarc::driver::result::malloc_async(self.stream(), bytes)
            } else {
                cudarc::driver::result::malloc_sync(bytes)
            }
        };
        let ptr = r.map_err(|e| if e.0 == cu::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY { BackendError::OutOfMemory { bytes } } else { driver_err("cuMemAlloc", e) })?;
        Ok(CudaBuffer { alloc: Alloc { ptr, pooled }, bytes, shared: self.shared.clone() })
    }

    /// An uninitialised tensor.
    pub(crate) fn empty(&self, shape: &[usize], dtype: DType) -> Result<Tensor<Self>, BackendError> {
        let n: usize = shape.iter().product();
        let bytes = dtype.storage_bytes(n).ok_or_else(|| BackendError::Shape(format!("{dtype} cannot hold {n} elements")))?;
        Ok(Tensor::from_parts(self.alloc(bytes)?, shape.to_vec(), dtype))
    }

    /// Enqueues a device-to-device copy of `bytes`.
    pub(crate) fn copy_d2d(&self, dst: CUdeviceptr, src: CUdeviceptr, bytes: usize) -> Result<(), BackendError> {
        if bytes == 0 {
            return Ok(());
        }
        self.enqueued();
        // SAFETY: both ranges are inside live allocations (the callers check the bounds).
        unsafe { cudarc::driver::result::memcpy_dtod_async(dst, src, bytes, self.stream()) }.map_err(dev("cuMemcpyDtoDAsync"))
    }

    /// Enqueues zeros over `bytes` at `ptr`.
    pub(crate) fn memset0(&self, ptr: CUdeviceptr, bytes: usize) -> Result<(), BackendError> {
        if bytes == 0 {
            return Ok(());
        }
        self.enqueued();
        // SAFETY: inside a live allocation.
        unsafe { cudarc::driver::result::memset_d8_async(ptr, 0, bytes, self.stream()) }.map_err(dev("cuMemsetD8Async"))
    }

    /// Waits for the stream, reports an out-of-range index a kernel flagged since the last
    /// sync, and frees the buffers dropped before it.
    pub(crate) fn sync(&self) -> Result<(), BackendError> {
        self.bind()?;
        self.shared.stream.synchronize().map_err(dev("cuStreamSynchronize"))?;
        self.shared.free_deferred();
        if !self.shared.err_armed.swap(false, std::sync::atomic::Ordering::AcqRel) {
            return Ok(());
        }
        let mut flag = [0u32];
        // SAFETY: the 4-byte flag allocated at open; the stream is idle.
        unsafe { cudarc::driver::result::memcpy_dtoh_sync(&mut flag, self.shared.err_flag) }.map_err(dev("cuMemcpyDtoH"))?;
        if flag[0] != 0 {
            // SAFETY: as above.
            unsafe { cudarc::driver::result::memset_d8_sync(self.shared.err_flag, 0, 4) }.map_err(dev("cuMemsetD8"))?;
            let what = if flag[0] & 1 != 0 { "kv_cache_write" } else { "kv_cache_attention" };
            return Err(BackendError::Shape(format!("{what}: a row's slot, block or position falls outside the KV cache (found on the GPU)")));
        }
        Ok(())
    }

    /// Device memory free and in total on this rank's GPU.
    pub fn memory(&self) -> Result<(usize, usize), BackendError> {
        self.bind()?;
        self.shared.ctx.mem_get_info().map_err(dev("cuMemGetInfo"))
    }

    /// How this rank shares the process's GPUs.
    pub fn placement(&self) -> Placement {
        self.placement
    }
}

/// A host tensor's bytes.
fn host_bytes(d: &HostData) -> Result<(*const c_void, usize), BackendError> {
    if let HostData::Quantized { dtype, .. } = d {
        return Err(BackendError::Unsupported(format!("the cuda backend keeps no {dtype} blocks yet (the layers upload them decoded to bf16)")));
    }
    let b = d.as_bytes();
    Ok((b.as_ptr().cast(), b.len()))
}

impl Backend for CudaBackend {
    type Buffer = CudaBuffer;
    const NAME: &'static str = "cuda";

    fn open(slot: &DeviceSlot) -> Result<Self, BackendError> {
        check_libraries(0..1)?;
        let gpus = device_count()?;
        check_libraries(1..3)?;
        let (ordinal, placement) = placement(slot, gpus)?;
        let ctx = CudaContext::new(ordinal).map_err(dev("cuCtx (primary context)"))?;
        // SAFETY: finetp orders its streams itself (events in `local.rs`, sync points);
        // cudarc's own per-slice events would be recorded into a capture and break it.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(dev("cuStreamCreate"))?;
        let cc = ctx.compute_capability().map_err(dev("cuDeviceGetAttribute"))?;
        let ptx = crate::ptx::cached(crate::ptx::arch(cc)).map_err(|e| BackendError::device("NVRTC", e))?;
        let funcs = crate::kernels::Functions::load(&ptx)?;
        let lt = crate::gemm::Lt::new(stream.cu_stream())?;
        // SAFETY: a 4-byte allocation on this context, zeroed before use.
        let err_flag = unsafe {
            let p = cudarc::driver::result::malloc_sync(4).map_err(dev("cuMemAlloc"))?;
            cudarc::driver::result::memset_d8_sync(p, 0, 4).map_err(dev("cuMemsetD8"))?;
            p
        };
        let pools = ctx.has_async_alloc();
        if pools {
            // Keep freed pool memory for the next step's allocations (the default threshold, 0,
            // hands it back to the driver at every sync, so every step would allocate afresh).
            let mut keep_all = u64::MAX;
            // SAFETY: the device's own default pool; the attribute is a u64.
            unsafe {
                let pool = cudarc::driver::result::device::get_default_mem_pool(ctx.cu_device()).map_err(dev("cuDeviceGetDefaultMemPool"))?;
                cudarc::driver::result::mem_pool::set_attribute(pool, cu::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, (&raw mut keep_all).cast()).map_err(dev("cuMemPoolSetAttribute"))?;
            }
        }
        let shared = Arc::new(Shared { funcs, lt, stream, ctx, err_flag, err_armed: Default::default(), pools, state: Mutex::new(State::default()) });
        Ok(Self { shared, placement, slot: *slot, hubs: Arc::default(), cpu: Arc::new(OnceLock::new()) })
    }

    fn connect(&self, spec: &GroupSpec, rv: &dyn Rendezvous) -> Result<Arc<dyn Collective<Self>>, CommError> {
        crate::comm::connect(self, spec, rv)
    }

    fn describe(&self) -> String {
        let ctx = &self.shared.ctx;
        let name = ctx.name().unwrap_or_else(|_| "NVIDIA GPU".into());
        let (major, minor) = ctx.compute_capability().unwrap_or((0, 0));
        let mem = self.memory().map(|(f, t)| format!(", {:.1} of {:.1} GiB free", f as f64 / (1u64 << 30) as f64, t as f64 / (1u64 << 30) as f64)).unwrap_or_default();
        let how = match self.placement {
            Placement::PerGpu => "one GPU per rank, NCCL".to_string(),
            Placement::SingleGpu { ranks } => format!("single-GPU path: rank {} of {ranks} on this GPU", self.slot.local_rank),
        };
        format!("{name} (sm_{major}{minor}) device {}{mem}; {how}", ctx.ordinal())
    }

    fn activation_dtype(&self) -> DType {
        DType::F32
    }

    fn decoded_weight_dtype(&self) -> DType {
        DType::BF16
    }

    fn zeros(&self, shape: &[usize], dtype: DType) -> Result<Tensor<Self>, BackendError> {
        let t = self.empty(shape, dtype)?;
        self.memset0(t.buffer().device_ptr(), t.buffer().bytes)?;
        Ok(t)
    }

    fn upload(&self, host: &HostTensor) -> Result<Tensor<Self>, BackendError> {
        self.no_host_during_capture("upload")?;
        let (src, bytes) = host_bytes(&host.data)?;
        let t = self.empty(&host.shape, host.dtype())?;
        if bytes > 0 {
            // SAFETY: `host` outlives the copy: the sync below waits for it.
            unsafe { cu::cuMemcpyHtoDAsync_v2(t.buffer().device_ptr(), src, bytes, self.stream()) }.result().map_err(dev("cuMemcpyHtoDAsync"))?;
        }
        self.sync()?;
        Ok(t)
    }

    fn download(&self, t: &Tensor<Self>) -> Result<HostTensor, BackendError> {
        self.no_host_during_capture("download")?;
        let n = t.numel();
        let mut data = HostData::zeroed(t.dtype(), n).ok_or_else(|| BackendError::Unsupported(format!("download of {}", t.dtype())))?;
        let dst = data.as_bytes_mut();
        let (dst, bytes) = (dst.as_mut_ptr().cast::<c_void>(), dst.len());
        self.bind()?;
        if bytes > 0 {
            // SAFETY: `data` is alive, and not otherwise touched, until the sync below, which
            // waits for the copy.
            unsafe { cu::cuMemcpyDtoHAsync_v2(dst, t.buffer().device_ptr(), bytes, self.stream()) }.result().map_err(dev("cuMemcpyDtoHAsync"))?;
        }
        self.sync()?;
        HostTensor::new(data, t.shape())
    }

    fn synchronize(&self) -> Result<(), BackendError> {
        if self.capturing() {
            return Ok(());
        }
        self.sync()
    }

    fn copy_block(&self, src: &Tensor<Self>, dst: &mut Tensor<Self>, b: Block) -> Result<(), BackendError> {
        let c = checks::copy_block(src, dst, &b)?;
        if c.is_empty() {
            return Ok(());
        }
        let (s, d) = (src.buffer().at(c.src_offset), dst.buffer().at(c.dst_offset));
        self.bind()?;
        if c.is_contiguous() {
            return self.copy_d2d(d, s, c.width * c.rows);
        }
        let device = cu::CUmemorytype::CU_MEMORYTYPE_DEVICE;
        let p = cu::CUDA_MEMCPY2D {
            srcXInBytes: 0,
            srcY: 0,
            srcMemoryType: device,
            srcHost: std::ptr::null(),
            srcDevice: s,
            srcArray: std::ptr::null_mut(),
            srcPitch: c.src_pitch,
            dstXInBytes: 0,
            dstY: 0,
            dstMemoryType: device,
            dstHost: std::ptr::null_mut(),
            dstDevice: d,
            dstArray: std::ptr::null_mut(),
            dstPitch: c.dst_pitch,
            WidthInBytes: c.width,
            Height: c.rows,
        };
        self.enqueued();
        // SAFETY: `rows` rows of `width` bytes at the two pitches, checked in bounds.
        unsafe { cu::cuMemcpy2DAsync_v2(&p, self.stream()) }.result().map_err(dev("cuMemcpy2DAsync"))
    }

    fn write(&self, t: &mut Tensor<Self>, host: &HostTensor) -> Result<(), BackendError> {
        self.no_host_during_capture("write")?;
        checks::write(t, host)?;
        let (src, bytes) = host_bytes(&host.data)?;
        self.bind()?;
        if bytes > 0 {
            // SAFETY: the sync below keeps `host` borrowed until the copy has run.
            unsafe { cu::cuMemcpyHtoDAsync_v2(t.buffer().device_ptr(), src, bytes, self.stream()) }.result().map_err(dev("cuMemcpyHtoDAsync"))?;
        }
        self.sync()
    }

    fn begin_capture(&self) -> Result<(), BackendError> {
        crate::graph::begin(self)
    }

    fn end_capture(&self) -> Result<Box<dyn CapturedGraph>, BackendError> {
        crate::graph::end(self)
    }
}
