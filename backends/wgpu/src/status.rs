//! The device-side error word: how a kernel reports bad indices it only sees on the device.
//!
//! KV-cache block tables, slots and positions are device tensors (so a step can be replayed
//! without the host), so the host cannot check them when the call is enqueued. The kernels
//! check every row and, on the first bad one, record
//! `[code, row, slot, position, table slots, blocks per slot, block, pool blocks]` here with
//! atomics. Every sync point reads the word back with its data and turns a set word into a
//! [`BackendError::Shape`] (then clears it), the way CUDA reports an asynchronous fault at the
//! next synchronising call. Rows that were in range were still processed.

use finetp_core::backend::BackendError;

use crate::WgpuBackend;

/// Words of the status buffer.
pub(crate) const WORDS: u64 = 8;

/// Codes the kernels write into word 0.
pub(crate) const KV_WRITE: u32 = 1;
pub(crate) const KV_ATTENTION: u32 = 2;

pub(crate) struct Status {
    pub buf: wgpu::Buffer,
}

impl Status {
    pub(crate) fn new(device: &wgpu::Device) -> Result<Self, BackendError> {
        let buf = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("finetp status"),
            size: WORDS * 4,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(Self { buf })
    }
}

/// The error a status word describes, if any.
pub(crate) fn decode(w: &[u32]) -> Option<BackendError> {
    let op = match w.first().copied()? {
        0 => return None,
        KV_WRITE => "kv_cache_write",
        KV_ATTENTION => "kv_cache_attention",
        _ => "a kernel",
    };
    let block = if w[6] == u32::MAX { "no block".to_string() } else { format!("block {}", w[6]) };
    Some(BackendError::Shape(format!(
        "{op}: row {} (slot {} position {}) is outside the cache: a block table of {} slots x {} blocks maps it to {block} of a pool of {} blocks (found on the device, reported at the next sync point)",
        w[1], w[2], w[3], w[4], w[5], w[7]
    )))
}

impl WgpuBackend {
    /// Reads back `srcs` together with the status word; a set word is the result (and is
    /// cleared).
    pub(crate) fn read_checked(&self, srcs: &[(&wgpu::Buffer, u64)]) -> Result<Vec<Vec<u32>>, BackendError> {
        let status = &self.inner.status.buf;
        let mut all: Vec<(&wgpu::Buffer, u64)> = srcs.to_vec();
        all.push((status, WORDS * 4));
        let mut out = self.read_back(&all)?;
        let words = out.pop().unwrap_or_default();
        if let Some(e) = decode(&words) {
            self.record(|enc| enc.clear_buffer(status, 0, None));
            self.flush();
            return Err(e);
        }
        Ok(out)
    }
}
