//! The pending command encoder: how calls are enqueued, submitted and waited for.
//!
//! Each backend handle records every kernel, copy and clear into one `wgpu::CommandEncoder`
//! (one compute pass per dispatch, so wgpu inserts the barriers between dependent
//! dispatches). Nothing is submitted until a sync point needs results (`read_back`),
//! except that a long recording is submitted every [`SUBMIT_EVERY`] commands so the device
//! starts on a long prefill while the host is still encoding it (a submit does not wait).
//!
//! Ordering: a `queue.write_buffer` would run before every command of the *next* submit,
//! i.e. before commands recorded earlier, so host data never goes that way into an existing
//! buffer; it goes into a fresh staging buffer that the encoder copies from, in order.

use std::sync::{Mutex, PoisonError};

use finetp_core::backend::BackendError;

use crate::WgpuBackend;

/// Commands recorded before an intermediate submit.
const SUBMIT_EVERY: usize = 512;

#[derive(Default)]
pub(crate) struct Stream {
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    enc: Option<wgpu::CommandEncoder>,
    commands: usize,
}

impl WgpuBackend {
    /// Records one command (a compute pass, a copy, a clear) into the pending encoder.
    pub(crate) fn record(&self, f: impl FnOnce(&mut wgpu::CommandEncoder)) {
        let mut p = self.inner.stream.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let dev = &self.inner.device;
        f(p.enc.get_or_insert_with(|| dev.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("finetp step") })));
        p.commands += 1;
        if p.commands >= SUBMIT_EVERY {
            let enc = p.enc.take();
            p.commands = 0;
            drop(p);
            if let Some(enc) = enc {
                self.inner.queue.submit([enc.finish()]);
            }
        }
    }

    /// Submits everything recorded so far (without waiting).
    pub(crate) fn flush(&self) {
        let enc = {
            let mut p = self.inner.stream.pending.lock().unwrap_or_else(PoisonError::into_inner);
            p.commands = 0;
            p.enc.take()
        };
        if let Some(enc) = enc {
            self.inner.queue.submit([enc.finish()]);
        }
    }

    /// Copies the first `bytes` bytes of each `(buffer, bytes)` source to the host, through
    /// one staging buffer and one wait (a sync point). Each result is whole 32-bit words (the
    /// last one padded), so f32/u32 data needs no further copy.
    pub(crate) fn read_back(&self, srcs: &[(&wgpu::Buffer, u64)]) -> Result<Vec<Vec<u32>>, BackendError> {
        let sizes: Vec<u64> = srcs.iter().map(|(_, n)| crate::buffer::padded(*n)).collect();
        let total: u64 = sizes.iter().sum();
        let staging = self.create_buffer(total, wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST, "readback")?;
        let mut at = 0;
        for ((src, _), &size) in srcs.iter().zip(&sizes) {
            let copy = size.min(src.size());
            self.record(|e| e.copy_buffer_to_buffer(src, 0, &staging, at, copy));
            at += size;
        }
        self.flush();
        let (tx, rx) = std::sync::mpsc::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            // The receiver waits below; it cannot have gone away.
            let _ = tx.send(r);
        });
        self.inner
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| BackendError::device("waiting for a readback", e))?;
        self.take_uncaptured()?;
        rx.recv()
            .map_err(|e| BackendError::device("readback never completed", e))?
            .map_err(|e| BackendError::device("mapping a readback buffer", e))?;
        let out = {
            let view = staging.slice(..).get_mapped_range().map_err(|e| BackendError::device("reading a readback buffer", e))?;
            let mut out = Vec::with_capacity(srcs.len());
            let mut at = 0usize;
            for ((_, n), &size) in srcs.iter().zip(&sizes) {
                let mut words = vec![0u32; (*n as usize).div_ceil(4)];
                let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
                bytes.copy_from_slice(&view[at..at + bytes.len()]);
                out.push(words);
                at += size as usize;
            }
            out
        };
        staging.unmap();
        Ok(out)
    }

    /// A buffer of `size` bytes (a multiple of 4, non-zero); creation errors come back typed.
    pub(crate) fn create_buffer(&self, size: u64, usage: wgpu::BufferUsages, label: &str) -> Result<wgpu::Buffer, BackendError> {
        self.create_buffer_with(size, usage, label, None)
    }

    /// A buffer holding `data` (padded to whole words), for uploads and staging.
    pub(crate) fn create_buffer_init(&self, data: &[u8], usage: wgpu::BufferUsages, label: &str) -> Result<wgpu::Buffer, BackendError> {
        self.create_buffer_with(crate::buffer::padded(data.len() as u64), usage, label, Some(data))
    }

    fn create_buffer_with(&self, size: u64, usage: wgpu::BufferUsages, label: &str, data: Option<&[u8]>) -> Result<wgpu::Buffer, BackendError> {
        let caps = self.caps();
        if size > caps.max_buffer {
            return Err(BackendError::Unsupported(format!(
                "a buffer of {size} bytes exceeds the adapter's max_buffer_size of {} bytes",
                caps.max_buffer
            )));
        }
        let dev = &self.inner.device;
        let oom = dev.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let invalid = dev.push_error_scope(wgpu::ErrorFilter::Validation);
        let buf = dev.create_buffer(&wgpu::BufferDescriptor { label: Some(label), size, usage, mapped_at_creation: data.is_some() });
        let filled = match data {
            Some(d) => match buf.slice(..).get_mapped_range_mut() {
                Ok(mut view) => {
                    view.slice(..d.len()).copy_from_slice(d);
                    drop(view);
                    buf.unmap();
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            },
            None => Ok(()),
        };
        let invalid = pollster::block_on(invalid.pop());
        let oom = pollster::block_on(oom.pop());
        if oom.is_some() {
            return Err(BackendError::OutOfMemory { bytes: size as usize });
        }
        if let Some(e) = invalid {
            return Err(BackendError::device(format!("creating a {size}-byte buffer ({label})"), e));
        }
        filled.map_err(|e| BackendError::device(format!("filling a {size}-byte buffer ({label})"), e))?;
        Ok(buf)
    }
}
