//! Opening a wgpu device: adapter choice, the features and limits requested, and what the
//! kernels may rely on ([`Caps`]).

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use finetp_backend_cpu::CpuBackend;
use finetp_core::backend::BackendError;

pub(crate) use crate::caps::Caps;
use crate::pipelines::Pipelines;
use crate::status::Status;
use crate::stream::Stream;

/// Threads per workgroup of every 1-D kernel (clamped to the adapter's limits). 64 is the
/// WebGPU-portable sweet spot, and on llvmpipe it is 8 SIMD batches of 8 lanes.
const WORKGROUP: u32 = 64;

/// Knobs for [`WgpuBackend::with_options`]. The defaults use everything the adapter offers.
#[derive(Debug, Clone)]
pub struct WgpuOptions {
    /// Caps the bytes of one storage binding below the adapter's
    /// `max_storage_buffer_binding_size` (tests force the split-weight path with it).
    pub max_binding_bytes: Option<u64>,
    /// Use `shader-f16` (native f16 loads of f16 weights) when the adapter has it. Without it
    /// f16 weights stay 16-bit in memory and are widened with `unpack2x16float`.
    pub shader_f16: bool,
    /// Use `shader-f64` (f64 sum of squares in RMSNorm, as the CPU backend) when the adapter
    /// has it. Without it RMSNorm accumulates in f32 (within 1e-6 relative of the CPU).
    pub shader_f64: bool,
}

impl Default for WgpuOptions {
    fn default() -> Self {
        Self { max_binding_bytes: None, shader_f16: true, shader_f64: true }
    }
}

/// The adapter a backend runs on, as printed by [`WgpuBackend::describe`](finetp_core::backend::Backend::describe).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterSummary {
    pub name: String,
    pub driver: String,
    pub driver_info: String,
    /// `"Vulkan"`, `"Metal"`, `"Dx12"`.
    pub backend: String,
    /// `"Cpu"` for software rasterisers such as lavapipe, else the GPU kind.
    pub device_type: String,
}

impl std::fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} {}, {}, {})", self.name, self.driver, self.driver_info, self.backend, self.device_type)
    }
}

pub(crate) struct Inner {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub adapter: AdapterSummary,
    pub caps: Caps,
    pub stream: Stream,
    pub pipelines: Pipelines,
    pub status: Status,
    /// A 4-byte storage buffer bound where a kernel's optional input is absent (a bias).
    pub dummy: wgpu::Buffer,
    /// Errors wgpu reported outside any error scope (a bug of ours if it ever fills): turned
    /// into a [`BackendError::Device`] at the next sync point instead of wgpu's default panic.
    pub uncaptured: Arc<Mutex<Vec<String>>>,
    /// For host-side work that reuses the CPU backend's code (top-k).
    cpu: OnceLock<CpuBackend>,
    /// Whether the driver fuses WGSL `fma` (probed once at startup).
    fma_fused: OnceLock<bool>,
}

/// One wgpu device and its queue: a rank's GPU. Cheap to clone (the clones share the device
/// and its pending command encoder), `Send + Sync`.
#[derive(Clone)]
pub struct WgpuBackend {
    pub(crate) inner: Arc<Inner>,
}

fn unavailable(missing: String) -> BackendError {
    BackendError::Unavailable {
        backend: "wgpu",
        missing,
        hint: "install mesa-vulkan-drivers (lavapipe) or a GPU driver".into(),
    }
}

impl WgpuBackend {
    /// Opens the best adapter with every feature and limit this backend can use.
    ///
    /// No adapter is [`BackendError::Unavailable`]. `WGPU_BACKEND`, `WGPU_ADAPTER_NAME` and
    /// `WGPU_POWER_PREF` are honoured (wgpu's environment variables).
    pub fn new() -> Result<Self, BackendError> {
        Self::with_options(WgpuOptions::default())
    }

    pub fn with_options(opts: WgpuOptions) -> Result<Self, BackendError> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = match pollster::block_on(wgpu::util::initialize_adapter_from_env(&instance, None)) {
            Ok(a) => a,
            Err(_) => pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::from_env().unwrap_or(wgpu::PowerPreference::HighPerformance),
                ..Default::default()
            }))
            .map_err(|e| unavailable(format!("no wgpu adapter ({e})")))?,
        };
        let info = adapter.get_info();
        let limits = adapter.limits();
        let have = adapter.features();
        let mut features = wgpu::Features::empty();
        if opts.shader_f16 && have.contains(wgpu::Features::SHADER_F16) {
            features |= wgpu::Features::SHADER_F16;
        }
        if opts.shader_f64 && have.contains(wgpu::Features::SHADER_F64) {
            features |= wgpu::Features::SHADER_F64;
        }
        let wg = WORKGROUP.min(limits.max_compute_invocations_per_workgroup).min(limits.max_compute_workgroup_size_x);
        if wg < 16 {
            return Err(unavailable(format!(
                "adapter {} allows only {wg} threads per workgroup (16 needed)",
                info.name
            )));
        }
        let desc = wgpu::DeviceDescriptor {
            label: Some("finetp"),
            required_features: features,
            // wgpu's defaults are WebGPU's (256 MiB buffers); ask for what the adapter has.
            required_limits: limits.clone(),
            ..Default::default()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc))
            .map_err(|e| unavailable(format!("adapter {} refused a device: {e}", info.name)))?;
        let uncaptured = Arc::new(Mutex::new(Vec::new()));
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock().unwrap_or_else(PoisonError::into_inner).push(e.to_string());
        }));
        let max_binding = limits.max_storage_buffer_binding_size.min(opts.max_binding_bytes.unwrap_or(u64::MAX)) / 4 * 4;
        let offset_align = u64::from(limits.min_storage_buffer_offset_alignment.max(4));
        if max_binding < 2 * offset_align {
            return Err(BackendError::Unsupported(format!(
                "a storage binding of {max_binding} bytes is too small (the offset alignment is {offset_align})"
            )));
        }
        let caps = Caps {
            max_binding,
            offset_align,
            max_buffer: limits.max_buffer_size,
            max_groups: limits.max_compute_workgroups_per_dimension,
            wg,
            shader_f16: features.contains(wgpu::Features::SHADER_F16),
            shader_f64: features.contains(wgpu::Features::SHADER_F64),
        };
        let adapter = AdapterSummary {
            name: info.name.clone(),
            driver: info.driver.clone(),
            driver_info: info.driver_info.clone(),
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
        };
        let status = Status::new(&device)?;
        let dummy = device.create_buffer(&wgpu::BufferDescriptor { label: Some("finetp dummy"), size: 4, usage: wgpu::BufferUsages::STORAGE, mapped_at_creation: false });
        let be = Self {
            inner: Arc::new(Inner {
                device,
                queue,
                adapter,
                caps,
                stream: Stream::default(),
                pipelines: Pipelines::default(),
                status,
                dummy,
                uncaptured,
                cpu: OnceLock::new(),
                fma_fused: OnceLock::new(),
            }),
        };
        let fused = be.probe_fma()?;
        be.inner.fma_fused.get_or_init(|| fused);
        Ok(be)
    }

    /// Runs WGSL `fma(a, b, c)` on inputs where a fused multiply-add (one rounding) and a
    /// multiply then an add (two) differ. WGSL allows either; Mesa's llvmpipe splits it.
    fn probe_fma(&self) -> Result<bool, BackendError> {
        use finetp_core::backend::{Backend, HostTensor};
        let (a, c) = (1.0 + f32::EPSILON * 2048.0, -(1.0 + f32::EPSILON * 4096.0)); // 1 + 2^-12, -(1 + 2^-11)
        let v = self.upload(&HostTensor::f32(vec![a, a, c], &[3])?)?;
        let o = self.zeros(&[1], finetp_core::backend::DType::F32)?;
        let caps = *self.caps();
        let k = self.kernel("fma_probe", || crate::shaders::build(crate::shaders::FMA_PROBE, &caps, &[]))?;
        let args = [v.buffer().buf.as_entire_binding(), o.buffer().buf.as_entire_binding()];
        self.launch(&k, crate::dispatch::Params::new().u(1)?, &args, self.grid(1)?)?;
        let got = self.download(&o)?.to_f32_vec().unwrap_or_default();
        // Exactly: (1 + 2^-12)^2 - (1 + 2^-11) = 2^-24; rounding the product first gives 0.
        Ok(got.first().is_some_and(|&r| r == a.mul_add(a, c) && r != 0.0))
    }

    /// Whether this driver fuses WGSL `fma` into one rounding, as the CPU backend's FMA does.
    /// Where it does (GPUs), the GEMM is bit-identical to the CPU backend's; where it does not
    /// (lavapipe) it differs by the extra rounding of each multiply.
    pub fn fma_is_fused(&self) -> bool {
        self.inner.fma_fused.get().copied().unwrap_or(false)
    }

    /// The adapter this backend runs on.
    pub fn adapter(&self) -> &AdapterSummary {
        &self.inner.adapter
    }

    /// Bytes of the largest storage binding the kernels use (weights above it are split).
    pub fn max_binding_bytes(&self) -> u64 {
        self.inner.caps.max_binding
    }

    /// Whether f16 weights are read with native f16 loads (`shader-f16`).
    pub fn uses_shader_f16(&self) -> bool {
        self.inner.caps.shader_f16
    }

    /// Whether RMSNorm accumulates in f64 (`shader-f64`), as the CPU backend does.
    pub fn uses_shader_f64(&self) -> bool {
        self.inner.caps.shader_f64
    }

    pub(crate) fn caps(&self) -> &Caps {
        &self.inner.caps
    }

    pub(crate) fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }

    /// A one-thread CPU backend for host-side work shared with the CPU code (sampling).
    pub(crate) fn cpu(&self) -> Result<&CpuBackend, BackendError> {
        if let Some(c) = self.inner.cpu.get() {
            return Ok(c);
        }
        let c = CpuBackend::new(1)?;
        Ok(self.inner.cpu.get_or_init(|| c))
    }

    /// Errors wgpu reported outside our error scopes since the last call.
    pub(crate) fn take_uncaptured(&self) -> Result<(), BackendError> {
        let mut v = self.inner.uncaptured.lock().unwrap_or_else(PoisonError::into_inner);
        if v.is_empty() {
            return Ok(());
        }
        let msg = v.join("; ");
        v.clear();
        Err(BackendError::device("wgpu reported errors outside any error scope", msg))
    }
}

impl std::fmt::Debug for WgpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WgpuBackend({})", self.inner.adapter)
    }
}
