//! The loaded ACL libraries, with calls that return `Result`.
//!
//! [`Acl::load`] opens the runtime (`libascendcl.so`), the tensor-descriptor library
//! (`libnnopbase.so`) and the operator libraries (`libopapi.so`, and the split
//! `libopapi_{math,nn,transformer,cv}.so` of newer CANN, whichever exist), and checks that every
//! function finetp needs is there before anything is called. A failed call is
//! [`AclError::Call`] with ACL's own message.

use std::ffi::{CStr, c_void};

use crate::loader::{self, Candidate, LoadError};
use crate::sys::{self, AscendApi, aclError, aclrtMemcpyKind, aclrtStream};

/// What an ACL call, or loading ACL, can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AclError {
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A library loaded but lacks a function finetp calls (an older or newer CANN).
    #[error("{lib} has no {symbol} (CANN too old or too new for this build of finetp)")]
    Missing { lib: String, symbol: &'static str },
    #[error("{call} failed with ACL error {code}{}", if .message.is_empty() { String::new() } else { format!(": {}", .message) })]
    Call { call: &'static str, code: i32, message: String },
}

pub const ASCENDCL: Candidate = Candidate { soname: "libascendcl.so", env: "FINETP_ASCENDCL_LIB" };
pub const NNOPBASE: Candidate = Candidate { soname: "libnnopbase.so", env: "FINETP_NNOPBASE_LIB" };
pub const OPAPI: Candidate = Candidate { soname: "libopapi.so", env: "FINETP_OPAPI_LIB" };
/// The operator libraries newer CANN splits `libopapi.so` into.
pub const OPAPI_SPLIT: [&str; 4] = ["libopapi_math.so", "libopapi_nn.so", "libopapi_transformer.so", "libopapi_cv.so"];

/// A function finetp needs and how to tell the library has it.
type Probe = (&'static str, fn(&AscendApi) -> bool);

/// The runtime functions that must exist (capture is optional: graph mode then runs eagerly).
const RUNTIME: [Probe; 21] = [
    ("aclInit", |a| a.aclInit.is_ok()),
    ("aclrtGetDeviceCount", |a| a.aclrtGetDeviceCount.is_ok()),
    ("aclrtSetDevice", |a| a.aclrtSetDevice.is_ok()),
    ("aclrtResetDevice", |a| a.aclrtResetDevice.is_ok()),
    ("aclrtCreateContext", |a| a.aclrtCreateContext.is_ok()),
    ("aclrtDestroyContext", |a| a.aclrtDestroyContext.is_ok()),
    ("aclrtSetCurrentContext", |a| a.aclrtSetCurrentContext.is_ok()),
    ("aclrtCreateStream", |a| a.aclrtCreateStream.is_ok()),
    ("aclrtDestroyStream", |a| a.aclrtDestroyStream.is_ok()),
    ("aclrtSynchronizeStream", |a| a.aclrtSynchronizeStream.is_ok()),
    ("aclrtSynchronizeStreamWithTimeout", |a| a.aclrtSynchronizeStreamWithTimeout.is_ok()),
    ("aclrtMalloc", |a| a.aclrtMalloc.is_ok()),
    ("aclrtFree", |a| a.aclrtFree.is_ok()),
    ("aclrtMemcpy", |a| a.aclrtMemcpy.is_ok()),
    ("aclrtMemcpyAsync", |a| a.aclrtMemcpyAsync.is_ok()),
    ("aclrtMemcpy2dAsync", |a| a.aclrtMemcpy2dAsync.is_ok()),
    ("aclrtMemsetAsync", |a| a.aclrtMemsetAsync.is_ok()),
    ("aclrtGetMemInfo", |a| a.aclrtGetMemInfo.is_ok()),
    ("aclGetRecentErrMsg", |a| a.aclGetRecentErrMsg.is_ok()),
    ("aclrtGetSocName", |a| a.aclrtGetSocName.is_ok()),
    ("aclFinalize", |a| a.aclFinalize.is_ok()),
];

const TENSORS: [Probe; 4] = [
    ("aclCreateTensor", |a| a.aclCreateTensor.is_ok()),
    ("aclDestroyTensor", |a| a.aclDestroyTensor.is_ok()),
    ("aclCreateScalar", |a| a.aclCreateScalar.is_ok()),
    ("aclDestroyScalar", |a| a.aclDestroyScalar.is_ok()),
];

/// The loaded libraries. Each [`AscendApi`] holds the symbols its own library has.
pub struct Acl {
    /// `libascendcl.so`.
    pub rt: AscendApi,
    /// `libnnopbase.so`.
    pub nnop: AscendApi,
    /// The operator libraries that exist, `libopapi.so` first.
    ops: Vec<(String, AscendApi)>,
}

// SAFETY: the structs hold a `Library` and plain function pointers, read-only after load; ACL's
// functions are callable from any thread (a thread binds its device with aclrtSetDevice /
// aclrtSetCurrentContext first, which the backend does).
unsafe impl Send for Acl {}
unsafe impl Sync for Acl {}

fn open_api(p: &std::ffi::OsString) -> Result<AscendApi, libloading::Error> {
    // SAFETY: bindgen's constructor: dlopen, then dlsym of each declared function.
    unsafe { AscendApi::new(p) }
}

impl Acl {
    /// Loads the libraries and checks every function finetp needs is present.
    ///
    /// # Errors
    /// [`AclError::Load`] naming the first library missing, [`AclError::Missing`] naming a
    /// function one of them lacks.
    pub fn load() -> Result<Self, AclError> {
        // SAFETY: these are ACL's libraries, whose declared ABI the bindings follow.
        let rt = unsafe { loader::load(ASCENDCL, open_api) }?;
        require(&rt, ASCENDCL.soname, &RUNTIME)?;
        let nnop = unsafe { loader::load(NNOPBASE, open_api) }?;
        require(&nnop, NNOPBASE.soname, &TENSORS)?;
        let mut ops = Vec::new();
        let first = unsafe { loader::load(OPAPI, open_api) };
        let missing = match first {
            Ok(api) => {
                ops.push((OPAPI.soname.to_string(), api));
                None
            }
            Err(e) => Some(e),
        };
        if std::env::var_os(OPAPI.env).is_none() {
            for name in OPAPI_SPLIT {
                let c = Candidate { soname: name, env: "FINETP_OPAPI_LIB" };
                if let Ok(api) = unsafe { loader::load(c, open_api) } {
                    ops.push((name.to_string(), api));
                }
            }
        }
        match (ops.is_empty(), missing) {
            (true, Some(e)) => Err(e.into()),
            _ => Ok(Self { rt, nnop, ops }),
        }
    }

    /// The first operator library that has `name` (checked with `has`).
    ///
    /// # Errors
    /// [`AclError::Missing`] when none has it.
    pub fn op(&self, name: &'static str, has: impl Fn(&AscendApi) -> bool) -> Result<&AscendApi, AclError> {
        self.ops.iter().find(|(_, a)| has(a)).map(|(_, a)| a).ok_or_else(|| AclError::Missing {
            lib: self.ops.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", "),
            symbol: name,
        })
    }

    /// Whether the runtime can capture a stream into a model (CANN 8.1+).
    pub fn has_capture(&self) -> bool {
        let r = &self.rt;
        r.aclmdlRICaptureBegin.is_ok() && r.aclmdlRICaptureEnd.is_ok() && r.aclmdlRIExecuteAsync.is_ok() && r.aclmdlRIDestroy.is_ok()
    }

    /// `Ok` for `ACL_SUCCESS`, else the call's error with ACL's latest message.
    pub fn check(&self, call: &'static str, code: aclError) -> Result<(), AclError> {
        if code == sys::ACL_SUCCESS as aclError {
            return Ok(());
        }
        // SAFETY: returns a thread-local C string owned by ACL, or null.
        let msg = unsafe { self.rt.aclGetRecentErrMsg() };
        let message = if msg.is_null() { String::new() } else { unsafe { CStr::from_ptr(msg) }.to_string_lossy().trim().to_string() };
        Err(AclError::Call { call, code, message })
    }

    /// The chip's name (`Ascend910B3`, …), or `"unknown"`.
    pub fn soc_name(&self) -> String {
        // SAFETY: a static C string owned by ACL, or null.
        let p = unsafe { self.rt.aclrtGetSocName() };
        if p.is_null() { "unknown".into() } else { unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned() }
    }

    /// `aclInit(NULL)`: once per process.
    pub fn init(&self) -> Result<(), AclError> {
        // SAFETY: a null config path is documented as "no configuration".
        self.check("aclInit", unsafe { self.rt.aclInit(std::ptr::null()) })
    }

    pub fn device_count(&self) -> Result<u32, AclError> {
        let mut n = 0u32;
        // SAFETY: writes one u32.
        self.check("aclrtGetDeviceCount", unsafe { self.rt.aclrtGetDeviceCount(&mut n) })?;
        Ok(n)
    }

    /// Free and total device (HBM) memory in bytes, of the calling thread's device.
    pub fn mem_info(&self) -> Result<(usize, usize), AclError> {
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: writes two size_t.
        self.check("aclrtGetMemInfo", unsafe { self.rt.aclrtGetMemInfo(sys::aclrtMemAttr::ACL_HBM_MEM, &mut free, &mut total) })?;
        Ok((free, total))
    }

    /// `aclrtMalloc` of `bytes` (at least 1: ACL refuses 0).
    pub fn malloc(&self, bytes: usize) -> Result<*mut c_void, AclError> {
        let mut p = std::ptr::null_mut();
        // SAFETY: writes one pointer.
        self.check("aclrtMalloc", unsafe { self.rt.aclrtMalloc(&mut p, bytes.max(1), sys::aclrtMemMallocPolicy::ACL_MEM_MALLOC_HUGE_FIRST) })?;
        Ok(p)
    }

    /// Enqueues a copy of `count` bytes on `stream`.
    ///
    /// # Safety
    /// `dst`/`src` are valid for `count` bytes on the sides `kind` names, and stay so until the
    /// stream has run the copy (host memory: until the next synchronisation).
    pub unsafe fn memcpy_async(&self, dst: *mut c_void, src: *const c_void, count: usize, kind: aclrtMemcpyKind, stream: aclrtStream) -> Result<(), AclError> {
        if count == 0 {
            return Ok(());
        }
        // SAFETY: as the caller promises.
        self.check("aclrtMemcpyAsync", unsafe { self.rt.aclrtMemcpyAsync(dst, count, src, count, kind, stream) })
    }

    /// Waits for `stream`, at most `timeout_ms` (`None`: without a limit).
    ///
    /// # Errors
    /// [`AclError::Call`]; `code` is `ACL_ERROR_RT_STREAM_SYNC_TIMEOUT` when the time ran out.
    ///
    /// # Safety
    /// `stream` is a live stream made by `aclrtCreateStream`.
    pub unsafe fn synchronize(&self, stream: aclrtStream, timeout_ms: Option<i32>) -> Result<(), AclError> {
        // SAFETY: as the caller promises.
        match timeout_ms {
            Some(ms) => self.check("aclrtSynchronizeStreamWithTimeout", unsafe { self.rt.aclrtSynchronizeStreamWithTimeout(stream, ms) }),
            None => self.check("aclrtSynchronizeStream", unsafe { self.rt.aclrtSynchronizeStream(stream) }),
        }
    }
}

impl AclError {
    /// Whether this is a stream synchronisation that ran out of time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, AclError::Call { code, .. } if *code == sys::ACL_ERROR_RT_STREAM_SYNC_TIMEOUT as i32)
    }
}

fn require(api: &AscendApi, lib: &str, fns: &[Probe]) -> Result<(), AclError> {
    match fns.iter().find(|(_, has)| !has(api)) {
        Some((symbol, _)) => Err(AclError::Missing { lib: lib.to_string(), symbol }),
        None => Ok(()),
    }
}
