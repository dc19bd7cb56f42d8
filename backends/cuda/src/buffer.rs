//! Device memory of one tensor, and what a rank's handle and all its buffers share.
//!
//! Allocation is stream-ordered where the GPU has memory pools (`cuMemAllocAsync` /
//! `cuMemFreeAsync` on the rank's stream), so a temporary dropped right after the kernel that
//! reads it is freed after that kernel, never under it. During a capture, memory comes from
//! `cuMemAlloc` (a graph must not own pool allocations it never frees), and every buffer
//! dropped while capturing is kept by the graph (the contract: tensors dropped during capture
//! live as long as the graph). Buffers that are not pool memory are freed at the next sync.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use cudarc::driver::sys::{CUdeviceptr, CUstream};
use cudarc::driver::{CudaContext, CudaStream};

use crate::gemm::Lt;
use crate::kernels::Functions;

/// One allocation: its address and whether it came from the stream-ordered pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Alloc {
    pub ptr: CUdeviceptr,
    pub pooled: bool,
}

/// What changes while the handle runs.
#[derive(Default)]
pub(crate) struct State {
    /// Allocations that are not pool memory, dropped since the last sync point.
    pub deferred: Vec<Alloc>,
    /// The running capture: calls enqueued and the buffers dropped so far; `None` otherwise.
    pub capture: Option<(usize, Vec<Alloc>)>,
}

/// What a rank's handle and all its buffers share.
///
/// Fields drop in order: the kernels and the cuBLASLt handle before the stream, the stream
/// before the context (the `Drop` below binds the context first).
pub struct Shared {
    pub(crate) funcs: Functions,
    pub(crate) lt: Lt,
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) ctx: Arc<CudaContext>,
    /// One u32 the kernels set when an index is out of range (read at sync points).
    pub(crate) err_flag: CUdeviceptr,
    /// Whether a kernel that can set `err_flag` (or a graph replay) ran since it was last read:
    /// sync points read it only then, not on every upload and download.
    pub(crate) err_armed: std::sync::atomic::AtomicBool,
    /// Whether this GPU has stream-ordered memory pools.
    pub(crate) pools: bool,
    pub(crate) state: Mutex<State>,
}

// SAFETY: the context, stream and device addresses are driver handles usable from any thread
// that binds the context (every entry point does); the mutable state is behind the mutex.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn raw_stream(&self) -> CUstream {
        self.stream.cu_stream()
    }

    /// Returns `a` to the driver: stream-ordered for pool memory, at once otherwise (only
    /// call this for memory nothing in flight reads).
    pub(crate) fn release(&self, a: Alloc) {
        // SAFETY: allocated on this context, released once.
        unsafe {
            if a.pooled {
                cudarc::driver::sys::cuMemFreeAsync(a.ptr, self.raw_stream());
            } else {
                cudarc::driver::sys::cuMemFree_v2(a.ptr);
            }
        }
    }

    /// Frees the deferred allocations (the stream is idle: call after a sync).
    pub(crate) fn free_deferred(&self) {
        let list = std::mem::take(&mut self.state().deferred);
        for a in list {
            self.release(a);
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let _ = self.ctx.bind_to_thread();
        let _ = self.stream.synchronize();
        self.free_deferred();
        // SAFETY: the flag was allocated with cuMemAlloc at open; nothing uses it any more.
        unsafe { cudarc::driver::sys::cuMemFree_v2(self.err_flag) };
    }
}

/// One tensor's device memory.
pub struct CudaBuffer {
    pub(crate) alloc: Alloc,
    pub(crate) bytes: usize,
    pub(crate) shared: Arc<Shared>,
}

impl CudaBuffer {
    /// The device address.
    pub fn device_ptr(&self) -> CUdeviceptr {
        self.alloc.ptr
    }

    /// The address `offset` bytes in.
    pub(crate) fn at(&self, offset: usize) -> CUdeviceptr {
        self.alloc.ptr + offset as u64
    }

    /// Bytes allocated.
    pub fn len(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }
}

impl Drop for CudaBuffer {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        let mut st = self.shared.state();
        if let Some((_, keep)) = st.capture.as_mut() {
            keep.push(self.alloc);
        } else if self.alloc.pooled {
            drop(st);
            let _ = self.shared.ctx.bind_to_thread();
            self.shared.release(self.alloc);
        } else {
            st.deferred.push(self.alloc);
        }
    }
}
