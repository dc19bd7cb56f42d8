//! `graph` mode as an ACL model-runtime capture (`aclmdlRICaptureBegin` … `End`, replayed with
//! `aclmdlRIExecuteAsync`), where the installed CANN has those calls (8.1+). Ops that need the
//! host (see `kernels.rs`) refuse to run during a capture, so a step that contains one cannot
//! be captured and the engine runs graph mode's static shapes eagerly, saying why.

use finetp_core::backend::{BackendError, CapturedGraph, ReplayError};
use ascend_sys::sys::{aclmdlRI, aclmdlRICaptureMode};

use crate::AscendBackend;
use crate::buffer::DevicePtr;
use crate::runtime::device_err;

pub(crate) fn begin(be: &AscendBackend) -> Result<(), BackendError> {
    let acl = be.shared.acl;
    if !acl.has_capture() {
        return Err(BackendError::Unsupported("this CANN has no aclmdlRICaptureBegin (ACL graph capture needs CANN 8.1 or newer)".into()));
    }
    if be.capturing() {
        return Err(BackendError::Unsupported("a capture is already running on this stream".into()));
    }
    be.sync()?;
    // SAFETY: this handle's stream, idle after the sync.
    let r = unsafe { acl.rt.aclmdlRICaptureBegin(be.stream(), aclmdlRICaptureMode::ACL_MODEL_RI_CAPTURE_MODE_THREAD_LOCAL) };
    acl.check("aclmdlRICaptureBegin", r).map_err(device_err)?;
    be.shared.state().capturing = Some(0);
    Ok(())
}

pub(crate) fn end(be: &AscendBackend) -> Result<Box<dyn CapturedGraph>, BackendError> {
    let acl = be.shared.acl;
    let ops = be.shared.state().capturing.take().ok_or_else(|| BackendError::Unsupported("end_capture without begin_capture".into()))?;
    let mut model: aclmdlRI = std::ptr::null_mut();
    // SAFETY: ends the capture begun on this stream.
    let r = unsafe { acl.rt.aclmdlRICaptureEnd(be.stream(), &mut model) };
    acl.check("aclmdlRICaptureEnd", r).map_err(device_err)?;
    // Buffers dropped during the capture are the graph's now.
    let keep = std::mem::take(&mut be.shared.state().retired);
    Ok(Box::new(AclGraph { be: be.clone(), model, ops, keep }))
}

/// A captured step.
struct AclGraph {
    be: AscendBackend,
    model: aclmdlRI,
    ops: usize,
    keep: Vec<DevicePtr>,
}

// SAFETY: the model handle is replayed on its backend's stream, from whichever thread owns it.
unsafe impl Send for AclGraph {}

impl CapturedGraph for AclGraph {
    fn ops(&self) -> usize {
        self.ops
    }

    unsafe fn replay(&mut self) -> Result<(), ReplayError> {
        let acl = self.be.shared.acl;
        // SAFETY: the caller keeps every captured buffer alive and idle.
        let r = unsafe { acl.rt.aclmdlRIExecuteAsync(self.model, self.be.stream()) };
        acl.check("aclmdlRIExecuteAsync", r).map_err(device_err)?;
        Ok(())
    }
}

impl Drop for AclGraph {
    fn drop(&mut self) {
        let acl = self.be.shared.acl;
        // SAFETY: the model and the buffers it used, released once, after the stream is idle.
        unsafe {
            acl.rt.aclrtSynchronizeStream(self.be.stream());
            acl.rt.aclmdlRIDestroy(self.model);
        }
        self.be.shared.state().retired.append(&mut self.keep);
    }
}
