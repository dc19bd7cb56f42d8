//! The memory half of the backend contract: allocation, upload, download, block copies.

use std::sync::Arc;

use finetp_backend_cpu::comm::connect_staged;
use finetp_core::backend::{Backend, BackendError, Block, Collective, CommError, DType, DeviceSlot, GroupSpec, HostData, HostTensor, Rendezvous, Tensor};
use half::{bf16, f16};

use crate::buffer::{WgpuBuffer, padded, whole};
use crate::dispatch::Params;
use crate::shaders;
use crate::{WgpuBackend, WgpuTensor};

/// Usage of every tensor buffer: bound to kernels, and the source and target of copies.
const TENSOR: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

/// The bytes of host data as stored on the device (16-bit values stay packed).
fn host_bytes(d: &HostData) -> &[u8] {
    match d {
        HostData::F32(v) => bytemuck::cast_slice(v),
        HostData::F16(v) => bytemuck::cast_slice(v),
        HostData::BF16(v) => bytemuck::cast_slice(v),
        HostData::U32(v) => bytemuck::cast_slice(v),
        HostData::Quantized { bytes, .. } => bytes,
    }
}

fn checked_host(host: &HostTensor) -> Result<(), BackendError> {
    let n: usize = host.shape.iter().product();
    if n != host.data.len() {
        return Err(BackendError::Shape(format!("host tensor of shape {:?} holds {} elements", host.shape, host.data.len())));
    }
    Ok(())
}

/// The dtypes this backend stores; any other is [`BackendError::Unsupported`].
fn stored(dtype: DType) -> Result<(), BackendError> {
    match dtype {
        DType::F32 | DType::U32 | DType::BF16 | DType::F16 => Ok(()),
        other => Err(BackendError::Unsupported(format!("the wgpu backend does not store {other} tensors"))),
    }
}

/// Host data of `n` elements of `dtype` from the words read back.
fn from_words(dtype: DType, n: usize, words: Vec<u32>) -> Result<HostData, BackendError> {
    let halves = || bytemuck::cast_slice::<u32, u16>(&words)[..n].to_vec();
    Ok(match dtype {
        DType::F32 => HostData::F32(bytemuck::allocation::try_cast_vec(words).unwrap_or_else(|(_, w)| w.into_iter().map(f32::from_bits).collect())),
        DType::U32 => HostData::U32(words),
        DType::BF16 => HostData::BF16(halves().into_iter().map(bf16::from_bits).collect()),
        DType::F16 => HostData::F16(halves().into_iter().map(f16::from_bits).collect()),
        other => return Err(BackendError::Unsupported(format!("the wgpu backend does not store {other} tensors"))),
    })
}

impl WgpuBackend {
    /// A zero-filled tensor buffer of `len` data bytes (wgpu zero-initialises new buffers).
    pub(crate) fn alloc(&self, len: u64) -> Result<WgpuBuffer, BackendError> {
        Ok(WgpuBuffer { buf: self.create_buffer(padded(len), TENSOR, "tensor")?, len })
    }
}

impl Backend for WgpuBackend {
    type Buffer = WgpuBuffer;
    const NAME: &'static str = "wgpu";

    /// The best adapter (every rank of a process opens its own device on it).
    fn open(_slot: &DeviceSlot) -> Result<Self, BackendError> {
        WgpuBackend::new()
    }

    /// wgpu devices cannot read each other's buffers: collectives are staged through the host
    /// over the CPU backend's in-process collectives (`docs/wgpu.md` counts the copies).
    fn connect(&self, spec: &GroupSpec, rv: &dyn Rendezvous) -> Result<Arc<dyn Collective<Self>>, CommError> {
        connect_staged(self, spec, rv)
    }

    /// f32, as the CPU backend (the GEMM reproduces its reduction order).
    fn activation_dtype(&self) -> DType {
        DType::F32
    }

    fn describe(&self) -> String {
        let c = self.caps();
        format!(
            "wgpu on {} (binding limit {} MiB, f16 weights {}, RMSNorm sum in {}, fma {})",
            self.adapter(),
            c.max_binding >> 20,
            if c.shader_f16 { "native (shader-f16)" } else { "unpacked (unpack2x16float)" },
            if c.shader_f64 { "f64" } else { "f32" },
            if self.fma_is_fused() { "fused" } else { "split into mul + add by the driver" }
        )
    }

    fn zeros(&self, shape: &[usize], dtype: DType) -> Result<WgpuTensor, BackendError> {
        stored(dtype)?;
        let bytes = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|n| dtype.storage_bytes(n))
            .ok_or_else(|| BackendError::Shape(format!("zeros: {shape:?} {dtype} overflows")))?;
        let buf = self.alloc(bytes as u64)?;
        Ok(Tensor::from_parts(buf, shape.to_vec(), dtype))
    }

    fn upload(&self, host: &HostTensor) -> Result<WgpuTensor, BackendError> {
        checked_host(host)?;
        let bytes = host_bytes(&host.data);
        let buf = self.create_buffer_init(bytes, TENSOR, "tensor")?;
        Ok(Tensor::from_parts(WgpuBuffer { buf, len: bytes.len() as u64 }, host.shape.clone(), host.dtype()))
    }

    fn download(&self, t: &WgpuTensor) -> Result<HostTensor, BackendError> {
        let b = t.buffer();
        let mut out = self.read_checked(&[(&b.buf, b.len)])?;
        let words = out.pop().unwrap_or_default();
        HostTensor::new(from_words(t.dtype(), t.numel(), words)?, t.shape())
    }

    fn synchronize(&self) -> Result<(), BackendError> {
        self.read_checked(&[]).map(drop)
    }

    fn copy_block(&self, src: &WgpuTensor, dst: &mut WgpuTensor, b: Block) -> Result<(), BackendError> {
        finetp_core::backend::checks::copy_block(src, dst, &b)?;
        let (sw, dw) = (src.row_len(), dst.row_len());
        let Block { src_row, src_col, dst_row, dst_col, rows, cols } = b;
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        let es = src.dtype().size_in_bytes();
        let contiguous = rows == 1 || (cols == sw && cols == dw);
        if es == 4 && contiguous {
            // One range in both: a plain buffer copy, no kernel.
            let (s, d) = (&src.buffer().buf, &dst.buffer().buf);
            let (so, doff, n) = (((src_row * sw + src_col) * 4) as u64, ((dst_row * dw + dst_col) * 4) as u64, (rows * cols * 4) as u64);
            self.record(|e| e.copy_buffer_to_buffer(s, so, d, doff, n));
            return Ok(());
        }
        let caps = *self.caps();
        let (key, body) = if es == 4 { ("copy32", shaders::COPY32) } else { ("copy16", shaders::COPY16) };
        let k = self.kernel(key, || shaders::build(body, &caps, &[]))?;
        let p = Params::new().u(rows * cols)?.u(cols)?.u(sw)?.u(dw)?.u(src_row)?.u(src_col)?.u(dst_row)?.u(dst_col)?;
        let args = [whole(src.buffer(), &caps, "copy_block")?, whole(dst.buffer(), &caps, "copy_block")?];
        self.launch(&k, p, &args, self.grid(rows * cols)?)
    }

    /// Host data goes into a fresh staging buffer that the pending encoder copies from, so it
    /// lands after every call enqueued before it (a `queue.write_buffer` would land before).
    fn write(&self, t: &mut WgpuTensor, host: &HostTensor) -> Result<(), BackendError> {
        checked_host(host)?;
        finetp_core::backend::checks::write(t, host)?;
        self.write_bytes(t, host_bytes(&host.data))
    }
}

impl WgpuBackend {
    /// Enqueues a copy of `bytes` (the tensor's stored bytes, already checked to fit) into
    /// `t`, through a fresh staging buffer.
    pub(crate) fn write_bytes(&self, t: &mut WgpuTensor, bytes: &[u8]) -> Result<(), BackendError> {
        if bytes.len() as u64 != t.buffer().len {
            return Err(BackendError::Shape(format!("write: {} bytes into a tensor of {} bytes", bytes.len(), t.buffer().len)));
        }
        // MAP_WRITE: the mapping at creation is the staging memory itself (without it wgpu
        // would stage the staging buffer through another one).
        let staging = self.create_buffer_init(bytes, wgpu::BufferUsages::MAP_WRITE | wgpu::BufferUsages::COPY_SRC, "write staging")?;
        let dst = &t.buffer().buf;
        let n = staging.size().min(dst.size());
        self.record(|e| e.copy_buffer_to_buffer(&staging, 0, dst, 0, n));
        Ok(())
    }
}
