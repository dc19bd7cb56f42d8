//! NCCL, loaded at run time by its own soname.
//!
//! cudarc's NCCL module looks for `libnccl.so` and `libnccl.so.<CUDA major>`, never
//! `libnccl.so.2` — NCCL's soname and the only file its PyPI wheel ships — so finetp declares
//! the few NCCL functions it calls (from `nccl.h`, BSD-3) and loads them itself: the path in
//! `FINETP_NCCL_LIB` first, then `libnccl.so.2`, then `libnccl.so`. Every function is resolved
//! at load, so a library that lacks one is one clear error, not a crash mid-run.

use std::ffi::{CStr, c_char, c_int, c_void};

/// NCCL's `ncclUniqueId`: what member 0 makes and every member joins with.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct UniqueId {
    pub internal: [c_char; UNIQUE_ID_BYTES],
}

/// `NCCL_UNIQUE_ID_BYTES`.
pub const UNIQUE_ID_BYTES: usize = 128;

/// `ncclComm_t`.
pub type RawComm = *mut c_void;
/// A `cudaStream_t` / `CUstream`.
pub type RawStream = *mut c_void;
/// `ncclResult_t`.
pub type NcclResult = c_int;

/// `ncclDataType_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    Int8 = 0,
    Uint8 = 1,
    Int32 = 2,
    Uint32 = 3,
    Int64 = 4,
    Uint64 = 5,
    Float16 = 6,
    Float32 = 7,
    Float64 = 8,
    Bfloat16 = 9,
}

/// `ncclRedOp_t` (finetp only sums).
pub const SUM: c_int = 0;

type SendFn = unsafe extern "C" fn(*const c_void, usize, DataType, c_int, RawComm, RawStream) -> NcclResult;
type RecvFn = unsafe extern "C" fn(*mut c_void, usize, DataType, c_int, RawComm, RawStream) -> NcclResult;

/// The NCCL functions finetp calls.
pub struct Api {
    pub get_version: unsafe extern "C" fn(*mut c_int) -> NcclResult,
    pub get_unique_id: unsafe extern "C" fn(*mut UniqueId) -> NcclResult,
    pub comm_init_rank: unsafe extern "C" fn(*mut RawComm, c_int, UniqueId, c_int) -> NcclResult,
    pub comm_destroy: unsafe extern "C" fn(RawComm) -> NcclResult,
    pub comm_abort: unsafe extern "C" fn(RawComm) -> NcclResult,
    pub comm_get_async_error: unsafe extern "C" fn(RawComm, *mut NcclResult) -> NcclResult,
    pub get_error_string: unsafe extern "C" fn(NcclResult) -> *const c_char,
    pub all_reduce: unsafe extern "C" fn(*const c_void, *mut c_void, usize, DataType, c_int, RawComm, RawStream) -> NcclResult,
    pub all_gather: unsafe extern "C" fn(*const c_void, *mut c_void, usize, DataType, RawComm, RawStream) -> NcclResult,
    pub reduce_scatter: unsafe extern "C" fn(*const c_void, *mut c_void, usize, DataType, c_int, RawComm, RawStream) -> NcclResult,
    pub broadcast: unsafe extern "C" fn(*const c_void, *mut c_void, usize, DataType, c_int, RawComm, RawStream) -> NcclResult,
    pub send: SendFn,
    pub recv: RecvFn,
    pub group_start: unsafe extern "C" fn() -> NcclResult,
    pub group_end: unsafe extern "C" fn() -> NcclResult,
}

/// The loaded library (kept for the life of the process).
pub struct Nccl {
    pub api: Api,
    /// The file that was loaded.
    pub path: String,
    _lib: libloading::Library,
}

/// What loading or calling NCCL can fail with.
#[derive(Debug, thiserror::Error)]
pub enum NcclError {
    #[error("cannot load NCCL (tried {tried:?}): {dlerror}")]
    Load { tried: Vec<String>, dlerror: String },
    #[error("{path} has no {symbol} (NCCL 2.19 or newer is needed)")]
    Missing { path: String, symbol: &'static str },
    #[error("{op} failed: NCCL error {code} ({message})")]
    Call { op: &'static str, code: NcclResult, message: String },
}

impl Nccl {
    /// Where NCCL is looked for, in order.
    pub fn candidates() -> Vec<String> {
        let mut c: Vec<String> = std::env::var("FINETP_NCCL_LIB").into_iter().filter(|p| !p.is_empty()).collect();
        c.extend(["libnccl.so.2".to_string(), "libnccl.so".to_string()]);
        c
    }

    /// Loads NCCL and resolves every function finetp calls.
    ///
    /// # Errors
    /// [`NcclError::Load`] with every name tried and the last loader message;
    /// [`NcclError::Missing`] for a library without one of the functions.
    pub fn load() -> Result<Self, NcclError> {
        let tried = Self::candidates();
        let mut last = String::new();
        for path in &tried {
            // SAFETY: loading NCCL runs its initialisers, which have no preconditions.
            match unsafe { libloading::Library::new(path) } {
                Ok(lib) => return Self::from_library(lib, path.clone()),
                Err(e) => last = std::error::Error::source(&e).map_or_else(|| e.to_string(), ToString::to_string),
            }
        }
        Err(NcclError::Load { tried, dlerror: last })
    }

    fn from_library(lib: libloading::Library, path: String) -> Result<Self, NcclError> {
        macro_rules! sym {
            ($name:literal) => {{
                // SAFETY: the symbol has the C signature declared in `Api` (nccl.h).
                let s = unsafe { lib.get(concat!($name, "\0").as_bytes()) }.map_err(|_| NcclError::Missing { path: path.clone(), symbol: $name })?;
                *s
            }};
        }
        let api = Api {
            get_version: sym!("ncclGetVersion"),
            get_unique_id: sym!("ncclGetUniqueId"),
            comm_init_rank: sym!("ncclCommInitRank"),
            comm_destroy: sym!("ncclCommDestroy"),
            comm_abort: sym!("ncclCommAbort"),
            comm_get_async_error: sym!("ncclCommGetAsyncError"),
            get_error_string: sym!("ncclGetErrorString"),
            all_reduce: sym!("ncclAllReduce"),
            all_gather: sym!("ncclAllGather"),
            reduce_scatter: sym!("ncclReduceScatter"),
            broadcast: sym!("ncclBroadcast"),
            send: sym!("ncclSend"),
            recv: sym!("ncclRecv"),
            group_start: sym!("ncclGroupStart"),
            group_end: sym!("ncclGroupEnd"),
        };
        Ok(Self { api, path, _lib: lib })
    }

    /// NCCL's return code as a result, with its own message.
    ///
    /// # Errors
    /// [`NcclError::Call`] for anything but `ncclSuccess`.
    pub fn check(&self, op: &'static str, r: NcclResult) -> Result<(), NcclError> {
        if r == 0 {
            return Ok(());
        }
        // SAFETY: NCCL returns a static string for every code.
        let p = unsafe { (self.api.get_error_string)(r) };
        let message = if p.is_null() { "no message".into() } else { unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned() };
        Err(NcclError::Call { op, code: r, message })
    }

    /// `ncclGetVersion`, e.g. 22703 for 2.27.3.
    ///
    /// # Errors
    /// As [`Self::check`].
    pub fn version(&self) -> Result<i32, NcclError> {
        let mut v = 0;
        // SAFETY: writes one int.
        self.check("ncclGetVersion", unsafe { (self.api.get_version)(&mut v) })?;
        Ok(v)
    }
}
