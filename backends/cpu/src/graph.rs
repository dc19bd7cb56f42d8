//! Graph capture on the CPU: a recorded op list.
//!
//! While a rank thread captures, every call on its [`CpuBackend`] and its in-process
//! communicators runs as usual *and* is recorded as a closure over its tensors' raw buffers
//! ([`Alias`]). Replaying runs the closures again in order. Three rules make that sound and
//! equal to eager execution:
//! - **buffers stay put**: a tensor dropped during capture does not free its memory; its
//!   storage moves into the recording (see `Drop for CpuStorage`) and lives as long as the
//!   graph. A `Vec`'s heap block does not move when the `Vec` does, so the recorded pointers
//!   stay valid;
//! - **fresh buffers are fresh every replay**: `zeros` during capture also records a
//!   `fill_zero`, so code that accumulates into a new buffer sees zeros at every replay, as
//!   it does eagerly;
//! - **no host round trips**: `download`, `upload`, `argmax` and `top_k` during capture fail
//!   with [`BackendError::Unsupported`]: their results would be frozen into the graph.
//!
//! The recording is thread-local: ranks are threads, and each captures only its own calls.

use std::cell::RefCell;
use std::mem::ManuallyDrop;

use finetp_core::backend::{BackendError, CapturedGraph, DType, ReplayError, Tensor};
use half::{bf16, f16};

use crate::storage::{CpuBackend, CpuStorage, CpuTensor};

/// One recorded call.
pub(crate) type Op = Box<dyn FnMut() -> Result<(), ReplayError> + Send>;

struct Recording {
    ops: Vec<(&'static str, Op)>,
    kept: Vec<CpuStorage>,
}

thread_local! {
    static RECORDING: RefCell<Option<Recording>> = const { RefCell::new(None) };
}

/// True while this thread is capturing.
pub(crate) fn capturing() -> bool {
    RECORDING.with(|r| r.borrow().is_some())
}

/// Appends `op` to this thread's recording (no-op when not capturing).
pub(crate) fn record(name: &'static str, op: Op) {
    RECORDING.with(|r| {
        if let Some(rec) = r.borrow_mut().as_mut() {
            rec.ops.push((name, op));
        }
    });
}

/// Keeps the storage of a tensor dropped during capture; hands it back when not capturing
/// (the caller then frees it).
pub(crate) fn keep(s: CpuStorage) -> Option<CpuStorage> {
    RECORDING.with(|r| match r.try_borrow_mut() {
        Ok(mut rec) => match rec.as_mut() {
            Some(rec) => {
                rec.kept.push(s);
                None
            }
            None => Some(s),
        },
        // Dropped while the recording itself is borrowed (cannot happen today): free it.
        Err(_) => Some(s),
    })
}

/// The error of a host round trip inside a capture.
pub(crate) fn host_sync(op: &str) -> BackendError {
    BackendError::Unsupported(format!(
        "{op} during graph capture: a captured step cannot exchange data with the host (its value would be frozen into the graph)"
    ))
}

pub(crate) fn begin() -> Result<(), BackendError> {
    RECORDING.with(|r| {
        let mut r = r.borrow_mut();
        if r.is_some() {
            return Err(BackendError::Unsupported("graph capture is already running on this thread".into()));
        }
        *r = Some(Recording { ops: Vec::new(), kept: Vec::new() });
        Ok(())
    })
}

pub(crate) fn end() -> Result<CpuGraph, BackendError> {
    let rec = RECORDING.with(|r| r.borrow_mut().take()).ok_or_else(|| BackendError::Unsupported("no graph capture is running on this thread".into()))?;
    Ok(CpuGraph { ops: rec.ops, kept: rec.kept })
}

/// A recorded decode step: its calls, and the buffers it owns.
pub struct CpuGraph {
    ops: Vec<(&'static str, Op)>,
    /// Storage of the tensors dropped during capture; recorded calls point into it.
    #[allow(dead_code)]
    kept: Vec<CpuStorage>,
}

impl CpuGraph {
    /// The recorded calls' names, in order (for tests and `--verbose` output).
    pub fn op_names(&self) -> Vec<&'static str> {
        self.ops.iter().map(|(n, _)| *n).collect()
    }
}

impl CapturedGraph for CpuGraph {
    fn ops(&self) -> usize {
        self.ops.len()
    }

    unsafe fn replay(&mut self) -> Result<(), ReplayError> {
        for (_, op) in &mut self.ops {
            op()?;
        }
        Ok(())
    }
}

/// A tensor's buffer as a recorded call sees it: the raw parts of its `Vec`, turned back into
/// a (never freed) tensor at replay.
pub(crate) struct Alias {
    ptr: *mut u8,
    len: usize,
    cap: usize,
    dtype: DType,
    shape: Vec<usize>,
}

// SAFETY: an `Alias` is only dereferenced by `replay`, whose contract requires the buffer to be
// alive and otherwise unaccessed; the pointer itself is plain data.
unsafe impl Send for Alias {}

impl Alias {
    /// An input's buffer (read at replay). `Vec::as_ptr` creates no reference to the elements,
    /// so the pointer stays usable alongside the owner's later `as_ptr`/`as_mut_ptr` calls.
    pub(crate) fn of(t: &CpuTensor) -> Self {
        let (ptr, len, cap) = match t.buffer() {
            CpuStorage::F32(v) => (v.as_ptr().cast_mut().cast(), v.len(), v.capacity()),
            CpuStorage::F16(v) => (v.as_ptr().cast_mut().cast(), v.len(), v.capacity()),
            CpuStorage::BF16(v) => (v.as_ptr().cast_mut().cast(), v.len(), v.capacity()),
            CpuStorage::U32(v) => (v.as_ptr().cast_mut().cast(), v.len(), v.capacity()),
        };
        Self { ptr, len, cap, dtype: t.dtype(), shape: t.shape().to_vec() }
    }

    /// An output's buffer (written at replay), taken through a unique borrow.
    pub(crate) fn of_mut(t: &mut CpuTensor) -> Self {
        let (dtype, shape) = (t.dtype(), t.shape().to_vec());
        let (ptr, len, cap) = match t.buffer_mut() {
            CpuStorage::F32(v) => (v.as_mut_ptr().cast(), v.len(), v.capacity()),
            CpuStorage::F16(v) => (v.as_mut_ptr().cast(), v.len(), v.capacity()),
            CpuStorage::BF16(v) => (v.as_mut_ptr().cast(), v.len(), v.capacity()),
            CpuStorage::U32(v) => (v.as_mut_ptr().cast(), v.len(), v.capacity()),
        };
        Self { ptr, len, cap, dtype, shape }
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
            match self.dtype {
                DType::F32 => CpuStorage::F32(Vec::from_raw_parts(self.ptr.cast::<f32>(), self.len, self.cap)),
                DType::F16 => CpuStorage::F16(Vec::from_raw_parts(self.ptr.cast::<f16>(), self.len, self.cap)),
                DType::BF16 => CpuStorage::BF16(Vec::from_raw_parts(self.ptr.cast::<bf16>(), self.len, self.cap)),
                DType::U32 => CpuStorage::U32(Vec::from_raw_parts(self.ptr.cast::<u32>(), self.len, self.cap)),
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
