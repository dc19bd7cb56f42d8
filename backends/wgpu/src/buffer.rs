//! Device buffers, and how a tensor is bound to a kernel within the adapter's binding limit.
//!
//! Every tensor is one `wgpu::Buffer` holding its elements in their stored dtype, row-major.
//! 16-bit elements (bf16, f16) are packed two per 32-bit word, little-endian, exactly as the
//! host slice's bytes: WGSL has no bf16 type, so kernels read the word and take a half
//! (`bitcast<f32>(w << 16u)` / `bitcast<f32>(w & 0xffff0000u)`). Storage buffers need sizes in
//! whole words, so a buffer is padded to a multiple of 4 bytes, and an empty tensor gets a
//! 4-byte dummy (wgpu refuses zero-sized bindings).
//!
//! A storage binding may cover at most `max_storage_buffer_binding_size` bytes (128 MiB on
//! lavapipe), while a buffer may be larger (2 GiB there). A big weight therefore stays one
//! buffer, and the kernels that read weights (GEMM, embedding) read it through consecutive
//! row [`windows`], one dispatch each; any other tensor must fit one binding ([`whole`]).

use finetp_core::backend::{BackendError, DType};

use crate::caps::Caps;

/// The device memory of one tensor.
pub struct WgpuBuffer {
    pub(crate) buf: wgpu::Buffer,
    /// Bytes of data (before padding).
    pub(crate) len: u64,
}

impl WgpuBuffer {
    /// Bytes of data (the buffer itself is padded to whole words).
    pub fn byte_len(&self) -> u64 {
        self.len
    }

    /// The underlying wgpu buffer.
    pub fn raw(&self) -> &wgpu::Buffer {
        &self.buf
    }
}

impl std::fmt::Debug for WgpuBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WgpuBuffer({} bytes)", self.len)
    }
}

/// Buffer size for `len` data bytes: whole words, never zero.
pub(crate) fn padded(len: u64) -> u64 {
    len.div_ceil(4).max(1) * 4
}

/// A part of a buffer bound to one kernel dispatch: bytes `offset..offset + size`, in which
/// element 0 of row `first_row` is element `elem_off` (the offset is rounded down to the
/// adapter's binding alignment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub offset: u64,
    pub size: u64,
    pub first_row: usize,
    pub rows: usize,
    pub elem_off: u32,
}

/// Splits `rows` rows of `row_elems` elements of `dtype` into the fewest consecutive windows
/// that each fit one storage binding. A single window (the whole tensor) when it fits.
pub(crate) fn windows(rows: usize, row_elems: usize, dtype: DType, buf_size: u64, caps: &Caps) -> Result<Vec<Window>, BackendError> {
    let es = dtype.size_in_bytes() as u64;
    let rb = row_elems as u64 * es;
    let total = rows as u64 * rb;
    if padded(total) <= caps.max_binding {
        return Ok(vec![Window { offset: 0, size: buf_size.min(caps.max_binding), first_row: 0, rows, elem_off: 0 }]);
    }
    let mut out = Vec::new();
    let mut r0 = 0usize;
    while r0 < rows {
        let start = r0 as u64 * rb;
        let offset = start / caps.offset_align * caps.offset_align;
        let slack = start - offset;
        let fit = ((caps.max_binding - slack) / rb) as usize;
        if fit == 0 {
            return Err(BackendError::Unsupported(format!(
                "one row of {rb} bytes does not fit a storage binding of {} bytes",
                caps.max_binding
            )));
        }
        let n = fit.min(rows - r0);
        let size = padded(slack + n as u64 * rb).min(buf_size - offset);
        let elem_off = u32::try_from(slack / es).map_err(|_| BackendError::Unsupported("binding offset overflows u32".into()))?;
        out.push(Window { offset, size, first_row: r0, rows: n, elem_off });
        r0 += n;
    }
    Ok(out)
}

/// The whole buffer as one binding, or a typed error naming `op` when it exceeds the limit.
pub(crate) fn whole<'a>(b: &'a WgpuBuffer, caps: &Caps, op: &str) -> Result<wgpu::BindingResource<'a>, BackendError> {
    if b.buf.size() > caps.max_binding {
        return Err(BackendError::Unsupported(format!(
            "{op}: a tensor of {} bytes exceeds the adapter's storage binding limit of {} bytes (only GEMM weights and embedding tables are split into windows)",
            b.len, caps.max_binding
        )));
    }
    Ok(b.buf.as_entire_binding())
}

/// `w` as a binding.
pub(crate) fn window_binding<'a>(b: &'a WgpuBuffer, w: &Window) -> wgpu::BindingResource<'a> {
    wgpu::BindingResource::Buffer(wgpu::BufferBinding { buffer: &b.buf, offset: w.offset, size: std::num::NonZeroU64::new(w.size) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(max_binding: u64) -> Caps {
        Caps { max_binding, offset_align: 256, max_buffer: 1 << 31, max_groups: 65535, wg: 64, shader_f16: false, shader_f64: false }
    }

    #[test]
    fn windows_cover_every_row_once_within_the_limit() {
        for (rows, k, dt) in [(1000, 37, DType::F32), (999, 33, DType::BF16), (64, 1000, DType::F16), (5, 3, DType::F32)] {
            let es = dt.size_in_bytes() as u64;
            let size = padded(rows as u64 * k as u64 * es);
            let c = caps(4096);
            let ws = windows(rows, k, dt, size, &c).expect("fits");
            let mut next = 0;
            for w in &ws {
                assert_eq!(w.first_row, next);
                assert!(w.size <= c.max_binding && w.offset % c.offset_align == 0 && w.size % 4 == 0);
                assert!(w.offset + w.size <= size);
                let first = w.offset + u64::from(w.elem_off) * es;
                assert_eq!(first, w.first_row as u64 * k as u64 * es);
                assert!(first + w.rows as u64 * k as u64 * es <= w.offset + w.size);
                next += w.rows;
            }
            assert_eq!(next, rows);
        }
    }

    #[test]
    fn a_row_wider_than_a_binding_is_an_error() {
        let c = caps(1024);
        assert!(windows(4, 1000, DType::F32, 16000, &c).is_err());
    }
}
