//! Opening a rank's NPU and the [`Backend`] half of the contract: memory, copies, sync points.

use std::ffi::c_void;
use std::sync::{Arc, Mutex, OnceLock};

use ascend_sys::sys::{aclrtMemcpyKind, aclrtStream};
use finetp_backend_cpu::CpuBackend;
use finetp_core::backend::{Backend, BackendError, Block, Collective, CommError, DType, DeviceSlot, GroupSpec, HostData, HostTensor, Rendezvous, Tensor, checks};

use crate::buffer::{AscendBuffer, DevicePtr, Shared, State};
use crate::runtime::{acl, device_err};

/// One rank's Ascend NPU: its ACL context and stream. Every call is enqueued on the stream;
/// `download` and `synchronize` are the sync points (and the ops that need host data, see
/// `lib.rs`). Cheap to clone.
#[derive(Clone)]
pub struct AscendBackend {
    pub(crate) shared: Arc<Shared>,
    cpu: Arc<OnceLock<CpuBackend>>,
}

impl AscendBackend {
    pub(crate) fn stream(&self) -> aclrtStream {
        self.shared.stream
    }

    /// The CPU reference, for the ops this backend runs on the host (see `lib.rs`).
    pub(crate) fn cpu(&self) -> Result<&CpuBackend, BackendError> {
        if let Some(c) = self.cpu.get() {
            return Ok(c);
        }
        let c = CpuBackend::new(1)?;
        Ok(self.cpu.get_or_init(|| c))
    }

    /// Counts one enqueued call toward a running capture.
    pub(crate) fn enqueued(&self) {
        if let Some(n) = self.shared.state().capturing.as_mut() {
            *n += 1;
        }
    }

    pub(crate) fn capturing(&self) -> bool {
        self.shared.state().capturing.is_some()
    }

    /// Refuses `what` during a capture: it needs host data, which a replay would not refresh.
    pub(crate) fn no_host_during_capture(&self, what: &str) -> Result<(), BackendError> {
        if self.capturing() {
            return Err(BackendError::Unsupported(format!("{what} needs the host, which an ACL graph cannot capture")));
        }
        Ok(())
    }

    /// A device allocation of `bytes` (uninitialised).
    pub(crate) fn alloc(&self, bytes: usize) -> Result<AscendBuffer, BackendError> {
        let p = self.shared.acl.malloc(bytes).map_err(|e| match e {
            ascend_sys::AclError::Call { .. } => BackendError::OutOfMemory { bytes },
            other => device_err(other),
        })?;
        Ok(AscendBuffer { ptr: DevicePtr(p), bytes, shared: self.shared.clone() })
    }

    /// An uninitialised tensor.
    pub(crate) fn empty(&self, shape: &[usize], dtype: DType) -> Result<Tensor<Self>, BackendError> {
        let n: usize = shape.iter().product();
        let bytes = dtype.storage_bytes(n).ok_or_else(|| BackendError::Shape(format!("{dtype} cannot hold {n} elements")))?;
        Ok(Tensor::from_parts(self.alloc(bytes)?, shape.to_vec(), dtype))
    }

    /// Enqueues a copy of `bytes` bytes.
    ///
    /// # Safety
    /// As [`ascend_sys::Acl::memcpy_async`]: both ranges valid, host memory kept alive until
    /// the next sync point.
    pub(crate) unsafe fn copy(&self, dst: *mut c_void, src: *const c_void, bytes: usize, kind: aclrtMemcpyKind) -> Result<(), BackendError> {
        self.enqueued();
        // SAFETY: as the caller promises.
        unsafe { self.shared.acl.memcpy_async(dst, src, bytes, kind, self.stream()) }.map_err(device_err)
    }

    /// Waits for the stream and frees the buffers dropped before it.
    pub(crate) fn sync(&self) -> Result<(), BackendError> {
        // SAFETY: this handle's own stream.
        unsafe { self.shared.acl.synchronize(self.stream(), None) }.map_err(device_err)?;
        self.shared.free_retired();
        Ok(())
    }

    /// The device (HBM) memory free and in total on this rank's NPU.
    pub fn memory(&self) -> Result<(usize, usize), BackendError> {
        self.shared.acl.mem_info().map_err(device_err)
    }
}

fn host_bytes(d: &HostData) -> Result<(*const c_void, usize), BackendError> {
    if let HostData::Quantized { dtype, .. } = d {
        return Err(BackendError::Unsupported(format!("the ascend backend keeps no {dtype} blocks (the layers upload them decoded)")));
    }
    let b = d.as_bytes();
    Ok((b.as_ptr().cast(), b.len()))
}

impl Backend for AscendBackend {
    type Buffer = AscendBuffer;
    const NAME: &'static str = "ascend";

    fn open(slot: &DeviceSlot) -> Result<Self, BackendError> {
        let acl = acl()?;
        let n = acl.device_count().map_err(device_err)?;
        if n == 0 {
            return Err(BackendError::Unavailable { backend: "ascend", missing: "an Ascend NPU (aclrtGetDeviceCount found none)".into(), hint: "run on a machine with an Ascend 910B/910C and its driver".into() });
        }
        let device = i32::try_from(slot.local_rank % n as usize).map_err(|_| BackendError::Shape("device ordinal".into()))?;
        let (mut context, mut stream) = (std::ptr::null_mut(), std::ptr::null_mut());
        // SAFETY: ACL's documented order: bind the device to this thread, make a context
        // (current on this thread from then on), then a stream in it.
        unsafe {
            acl.check("aclrtSetDevice", acl.rt.aclrtSetDevice(device)).map_err(device_err)?;
            acl.check("aclrtCreateContext", acl.rt.aclrtCreateContext(&mut context, device)).map_err(device_err)?;
            acl.check("aclrtCreateStream", acl.rt.aclrtCreateStream(&mut stream)).map_err(device_err)?;
        }
        let shared = Arc::new(Shared { acl, device, stream, context, state: Mutex::new(State::default()) });
        Ok(Self { shared, cpu: Arc::new(OnceLock::new()) })
    }

    fn connect(&self, spec: &GroupSpec, rv: &dyn Rendezvous) -> Result<Arc<dyn Collective<Self>>, CommError> {
        crate::comm::connect(self, spec, rv)
    }

    fn describe(&self) -> String {
        let mem = self.memory().map(|(f, t)| format!(", {:.1} of {:.1} GiB free", f as f64 / (1u64 << 30) as f64, t as f64 / (1u64 << 30) as f64)).unwrap_or_default();
        format!("Ascend {} device {}{mem} (ACL bindings: {})", self.shared.acl.soc_name(), self.shared.device, ascend_sys::HEADERS)
    }

    fn activation_dtype(&self) -> DType {
        DType::F32
    }

    fn zeros(&self, shape: &[usize], dtype: DType) -> Result<Tensor<Self>, BackendError> {
        let t = self.empty(shape, dtype)?;
        let b = t.buffer();
        if b.bytes > 0 {
            self.enqueued();
            // SAFETY: the whole of a fresh allocation.
            let r = unsafe { self.shared.acl.rt.aclrtMemsetAsync(b.as_ptr(), b.bytes, 0, b.bytes, self.stream()) };
            self.shared.acl.check("aclrtMemsetAsync", r).map_err(device_err)?;
        }
        Ok(t)
    }

    fn upload(&self, host: &HostTensor) -> Result<Tensor<Self>, BackendError> {
        self.no_host_during_capture("upload")?;
        let (src, bytes) = host_bytes(&host.data)?;
        let t = self.empty(&host.shape, host.dtype())?;
        // SAFETY: `host` outlives the copy: the sync below waits for it.
        unsafe { self.copy(t.buffer().as_ptr(), src, bytes, aclrtMemcpyKind::ACL_MEMCPY_HOST_TO_DEVICE)? };
        self.sync()?;
        Ok(t)
    }

    fn download(&self, t: &Tensor<Self>) -> Result<HostTensor, BackendError> {
        self.no_host_during_capture("download")?;
        let n = t.numel();
        let mut data = HostData::zeroed(t.dtype(), n).ok_or_else(|| BackendError::Unsupported(format!("download of {}", t.dtype())))?;
        let dst = data.as_bytes_mut();
        let (dst, bytes) = (dst.as_mut_ptr().cast::<c_void>(), dst.len());
        // SAFETY: `data` is alive, and not otherwise touched, until the sync below, which waits
        // for the copy.
        unsafe { self.copy(dst, t.buffer().as_ptr(), bytes, aclrtMemcpyKind::ACL_MEMCPY_DEVICE_TO_HOST)? };
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
        let s = src.buffer().as_ptr().wrapping_byte_add(c.src_offset);
        let d = dst.buffer().as_ptr().wrapping_byte_add(c.dst_offset);
        if c.is_contiguous() {
            // SAFETY: checked in bounds of both tensors.
            return unsafe { self.copy(d, s, c.width * c.rows, aclrtMemcpyKind::ACL_MEMCPY_DEVICE_TO_DEVICE) };
        }
        self.enqueued();
        // SAFETY: `rows` rows of `width` bytes at the two pitches, checked in bounds.
        let r = unsafe { self.shared.acl.rt.aclrtMemcpy2dAsync(d, c.dst_pitch, s, c.src_pitch, c.width, c.rows, aclrtMemcpyKind::ACL_MEMCPY_DEVICE_TO_DEVICE, self.stream()) };
        self.shared.acl.check("aclrtMemcpy2dAsync", r).map_err(device_err)
    }

    fn write(&self, t: &mut Tensor<Self>, host: &HostTensor) -> Result<(), BackendError> {
        self.no_host_during_capture("write")?;
        checks::write(t, host)?;
        let (src, bytes) = host_bytes(&host.data)?;
        // SAFETY: the sync below keeps `host` borrowed until the copy has run.
        unsafe { self.copy(t.buffer().as_ptr(), src, bytes, aclrtMemcpyKind::ACL_MEMCPY_HOST_TO_DEVICE)? };
        self.sync()
    }

    fn begin_capture(&self) -> Result<(), BackendError> {
        crate::graph::begin(self)
    }

    fn end_capture(&self) -> Result<Box<dyn finetp_core::backend::CapturedGraph>, BackendError> {
        crate::graph::end(self)
    }
}
