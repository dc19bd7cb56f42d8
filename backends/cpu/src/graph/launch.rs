//! How a call is recorded: its tensors' buffers as raw aliases, and the closure that runs it.

use std::mem::ManuallyDrop;

use finetp_core::backend::{BackendError, DType, ReplayError, Tensor};
use half::{bf16, f16};

use super::recording::{capturing, record};
use crate::storage::{CpuBackend, CpuStorage, CpuTensor};

/// A tensor's buffer as a recorded call sees it: the raw parts of its `Vec`, turned back into
/// a (never freed) tensor at replay.
pub(crate) struct Alias {
    ptr: *mut u8,
    len: usize,
    cap: usize,
    /// Which `CpuStorage` variant the buffer is.
    elem: Elem,
    dtype: DType,
    shape: Vec<usize>,
}

/// The element type of a `CpuStorage` variant (what `Vec<T>` to rebuild).
#[derive(Clone, Copy)]
enum Elem {
    F32,
    F16,
    BF16,
    U32,
    /// `CpuStorage::Blocks` of this format (a `Vec<u8>`).
    Blocks(DType),
}

// SAFETY: an `Alias` is only dereferenced by `replay`, whose contract requires the buffer to be
// alive and otherwise unaccessed; the pointer itself is plain data.
unsafe impl Send for Alias {}

impl Alias {
    /// An input's buffer (read at replay). `Vec::as_ptr` creates no reference to the elements,
    /// so the pointer stays usable alongside the owner's later `as_ptr`/`as_mut_ptr` calls.
    pub(crate) fn of(t: &CpuTensor) -> Self {
        let (ptr, len, cap, elem) = match t.buffer() {
            CpuStorage::F32(v) => (v.as_ptr().cast_mut().cast(), v.len(), v.capacity(), Elem::F32),
            CpuStorage::F16(v) => (v.as_ptr().cast_mut().cast(), v.len(), v.capacity(), Elem::F16),
            CpuStorage::BF16(v) => (v.as_ptr().cast_mut().cast(), v.len(), v.capacity(), Elem::BF16),
            CpuStorage::U32(v) => (v.as_ptr().cast_mut().cast(), v.len(), v.capacity(), Elem::U32),
            CpuStorage::Blocks { dtype, bytes } => (bytes.as_ptr().cast_mut(), bytes.len(), bytes.capacity(), Elem::Blocks(*dtype)),
        };
        Self { ptr, len, cap, elem, dtype: t.dtype(), shape: t.shape().to_vec() }
    }

    /// An output's buffer (written at replay), taken through a unique borrow.
    pub(crate) fn of_mut(t: &mut CpuTensor) -> Self {
        let (dtype, shape) = (t.dtype(), t.shape().to_vec());
        let (ptr, len, cap, elem) = match t.buffer_mut() {
            CpuStorage::F32(v) => (v.as_mut_ptr().cast(), v.len(), v.capacity(), Elem::F32),
            CpuStorage::F16(v) => (v.as_mut_ptr().cast(), v.len(), v.capacity(), Elem::F16),
            CpuStorage::BF16(v) => (v.as_mut_ptr().cast(), v.len(), v.capacity(), Elem::BF16),
            CpuStorage::U32(v) => (v.as_mut_ptr().cast(), v.len(), v.capacity(), Elem::U32),
            CpuStorage::Blocks { dtype, bytes } => (bytes.as_mut_ptr(), bytes.len(), bytes.capacity(), Elem::Blocks(*dtype)),
        };
        Self { ptr, len, cap, elem, dtype, shape }
    }

    /// The tensor again, sharing the buffer. It must never be dropped (hence `ManuallyDrop`).
    ///
    /// # Safety
    /// The buffer must still be the live `Vec` allocation this alias was taken from, and no
    /// other reference may access it while the returned tensor is used mutably.
    pub(crate) unsafe fn tensor(&self) -> ManuallyDrop<CpuTensor> {
        // SAFETY: (ptr, len, cap) are the parts of a live `Vec<T>` of this dtype (caller);
        // `ManuallyDrop` keeps the second owner from ever freeing it.
        let buf = unsafe {
            match self.elem {
                Elem::F32 => CpuStorage::F32(Vec::from_raw_parts(self.ptr.cast::<f32>(), self.len, self.cap)),
                Elem::F16 => CpuStorage::F16(Vec::from_raw_parts(self.ptr.cast::<f16>(), self.len, self.cap)),
                Elem::BF16 => CpuStorage::BF16(Vec::from_raw_parts(self.ptr.cast::<bf16>(), self.len, self.cap)),
                Elem::U32 => CpuStorage::U32(Vec::from_raw_parts(self.ptr.cast::<u32>(), self.len, self.cap)),
                Elem::Blocks(dtype) => CpuStorage::Blocks { dtype, bytes: Vec::from_raw_parts(self.ptr, self.len, self.cap) },
            }
        };
        ManuallyDrop::new(Tensor::from_parts(buf, self.shape.clone(), self.dtype))
    }
}

/// Runs `f(ctx, ins, outs)` now; while capturing, also records it to run again at replay on the
/// same buffers (with a clone of `ctx`: the device, or a communicator's member state).
pub(crate) fn launch<C, E, F>(ctx: &C, name: &'static str, ins: &[&CpuTensor], outs: &mut [&mut CpuTensor], f: F) -> Result<(), E>
where
    C: Clone + Send + 'static,
    E: Into<ReplayError>,
    F: Fn(&C, &[&CpuTensor], &mut [&mut CpuTensor]) -> Result<(), E> + Send + 'static,
{
    f(ctx, ins, outs)?;
    if capturing() {
        let ins: Vec<Alias> = ins.iter().map(|t| Alias::of(t)).collect();
        let outs: Vec<Alias> = outs.iter_mut().map(|t| Alias::of_mut(t)).collect();
        let ctx = ctx.clone();
        record(
            name,
            Box::new(move || {
                // SAFETY: `replay`'s contract keeps every aliased buffer alive and otherwise
                // unaccessed; inputs and outputs are distinct buffers, as the borrows of the
                // recorded call were.
                let it: Vec<ManuallyDrop<CpuTensor>> = ins.iter().map(|a| unsafe { a.tensor() }).collect();
                let mut ot: Vec<ManuallyDrop<CpuTensor>> = outs.iter().map(|a| unsafe { a.tensor() }).collect();
                let ir: Vec<&CpuTensor> = it.iter().map(|t| &**t).collect();
                let mut or: Vec<&mut CpuTensor> = ot.iter_mut().map(|t| &mut **t).collect();
                f(&ctx, &ir, &mut or).map_err(Into::into)
            }),
        );
    }
    Ok(())
}

impl CpuBackend {
    /// [`launch`] on this device.
    pub(crate) fn launch<F>(&self, name: &'static str, ins: &[&CpuTensor], outs: &mut [&mut CpuTensor], f: F) -> Result<(), BackendError>
    where
        F: Fn(&CpuBackend, &[&CpuTensor], &mut [&mut CpuTensor]) -> Result<(), BackendError> + Send + 'static,
    {
        launch(self, name, ins, outs, f)
    }
}
