//! Device memory of one tensor, and the per-handle state every buffer shares.
//!
//! Freeing is deferred: a buffer dropped while the stream may still read it (a temporary of
//! the op just enqueued) must not go back to ACL before the stream is done, so its pointer
//! waits in [`Shared::retired`] until the next sync point frees it. During a capture the
//! retired buffers belong to the graph instead (the contract: tensors dropped during capture
//! live as long as the graph).

use std::ffi::c_void;
use std::sync::{Arc, Mutex, PoisonError};

use ascend_sys::Acl;
use ascend_sys::sys::aclrtStream;

/// What a rank's handle and all its buffers share.
pub struct Shared {
    pub(crate) acl: &'static Acl,
    pub(crate) device: i32,
    pub(crate) stream: aclrtStream,
    pub(crate) context: *mut c_void,
    pub(crate) state: Mutex<State>,
}

/// What changes while the handle runs.
#[derive(Default)]
pub(crate) struct State {
    /// Device pointers of dropped buffers, freed at the next sync point.
    pub retired: Vec<DevicePtr>,
    /// The aclnn workspace (one per stream: ops on one stream run in order, so they share it).
    pub workspace: Option<(DevicePtr, u64)>,
    /// Calls enqueued since the capture began; `None` when not capturing.
    pub capturing: Option<usize>,
}

/// A raw device pointer (plain data; ownership is tracked by whoever holds it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DevicePtr(pub *mut c_void);

// SAFETY: a device address, meaningful on any thread that has the device's context.
unsafe impl Send for DevicePtr {}
// SAFETY: a plain address; reading it from several threads is fine.
unsafe impl Sync for DevicePtr {}

// SAFETY: the stream and context are ACL handles usable from any thread bound to the device;
// the mutable state is behind the mutex.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    pub(crate) fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Frees every retired buffer (the stream has finished with them: call after a sync).
    pub(crate) fn free_retired(&self) {
        let ptrs = std::mem::take(&mut self.state().retired);
        for p in ptrs {
            // SAFETY: allocated by aclrtMalloc on this device, no longer referenced.
            unsafe { self.acl.rt.aclrtFree(p.0) };
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: this handle's own stream and context, destroyed once, after the last buffer.
        unsafe {
            self.acl.rt.aclrtSynchronizeStream(self.stream);
        }
        self.free_retired();
        if let Some((ws, _)) = self.state().workspace.take() {
            // SAFETY: as above.
            unsafe { self.acl.rt.aclrtFree(ws.0) };
        }
        unsafe {
            self.acl.rt.aclrtDestroyStream(self.stream);
            self.acl.rt.aclrtDestroyContext(self.context);
        }
    }
}

/// One tensor's device memory.
pub struct AscendBuffer {
    pub(crate) ptr: DevicePtr,
    pub(crate) bytes: usize,
    pub(crate) shared: Arc<Shared>,
}

impl AscendBuffer {
    /// The device address (for FFI calls).
    pub fn as_ptr(&self) -> *mut c_void {
        self.ptr.0
    }

    /// Bytes allocated.
    pub fn len(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }
}

impl Drop for AscendBuffer {
    fn drop(&mut self) {
        self.shared.state().retired.push(self.ptr);
    }
}
