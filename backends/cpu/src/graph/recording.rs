//! The thread-local recording of a capture, and the captured graph it becomes.

use std::any::Any;
use std::cell::RefCell;

use finetp_core::backend::{BackendError, CapturedGraph, ReplayError};

/// One recorded call.
pub(crate) type Op = Box<dyn FnMut() -> Result<(), ReplayError> + Send>;

struct Recording {
    ops: Vec<(&'static str, Op)>,
    kept: Vec<Kept>,
}

/// The storage of a tensor dropped during capture (a `CpuStorage`, kept opaque here so that this
/// file needs nothing of the tensor types).
pub(crate) type Kept = Box<dyn Any + Send>;

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
pub(crate) fn keep(s: Kept) -> Option<Kept> {
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
    kept: Vec<Kept>,
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
