//! The loaded HCCL library, with calls that return `Result`.

use std::ffi::CStr;

use ascend_sys::loader::{self, Candidate, LoadError};

use crate::sys::{self, Hccl, HcclResult};

pub const LIBHCCL: Candidate = Candidate { soname: "libhccl.so", env: "FINETP_HCCL_LIB" };

/// What loading HCCL or an HCCL call can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HcclError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("libhccl.so has no {0} (CANN too old or too new for this build of finetp)")]
    Missing(&'static str),
    #[error("{call} failed with HCCL error {code}: {message}")]
    Call { call: &'static str, code: u32, message: String },
}

impl HcclError {
    /// Whether HCCL reported a timeout (`HCCL_E_TIMEOUT`).
    pub fn is_timeout(&self) -> bool {
        matches!(self, HcclError::Call { code, .. } if *code == sys::HcclResult::HCCL_E_TIMEOUT.0)
    }
}

/// `libhccl.so`, every function finetp calls checked present.
pub struct HcclLib {
    pub api: Hccl,
}

// SAFETY: a `Library` and function pointers, read-only after load; HCCL's functions take their
// communicator and stream explicitly.
unsafe impl Send for HcclLib {}
unsafe impl Sync for HcclLib {}

/// A function finetp needs and how to tell the library has it.
type Probe = (&'static str, fn(&Hccl) -> bool);

const REQUIRED: [Probe; 16] = [
    ("HcclGetRootInfo", |a| a.HcclGetRootInfo.is_ok()),
    ("HcclCommInitRootInfo", |a| a.HcclCommInitRootInfo.is_ok()),
    ("HcclCommDestroy", |a| a.HcclCommDestroy.is_ok()),
    ("HcclGetRankSize", |a| a.HcclGetRankSize.is_ok()),
    ("HcclGetRankId", |a| a.HcclGetRankId.is_ok()),
    ("HcclGetErrorString", |a| a.HcclGetErrorString.is_ok()),
    ("HcclGetCommAsyncError", |a| a.HcclGetCommAsyncError.is_ok()),
    ("HcclAllReduce", |a| a.HcclAllReduce.is_ok()),
    ("HcclBroadcast", |a| a.HcclBroadcast.is_ok()),
    ("HcclAllGather", |a| a.HcclAllGather.is_ok()),
    ("HcclAllGatherV", |a| a.HcclAllGatherV.is_ok()),
    ("HcclReduceScatter", |a| a.HcclReduceScatter.is_ok()),
    ("HcclReduceScatterV", |a| a.HcclReduceScatterV.is_ok()),
    ("HcclAlltoAll", |a| a.HcclAlltoAll.is_ok()),
    ("HcclAlltoAllV", |a| a.HcclAlltoAllV.is_ok()),
    ("HcclBarrier", |a| a.HcclBarrier.is_ok()),
];

impl HcclLib {
    /// Loads `libhccl.so` and checks every function is there.
    ///
    /// # Errors
    /// [`HcclError::Load`] naming the places tried, [`HcclError::Missing`] naming a function.
    pub fn load() -> Result<Self, HcclError> {
        // SAFETY: HCCL's library, whose declared ABI the bindings follow.
        let api = unsafe { loader::load(LIBHCCL, |p| Hccl::new(p)) }?;
        if let Some((name, _)) = REQUIRED.iter().find(|(_, has)| !has(&api)) {
            return Err(HcclError::Missing(name));
        }
        Ok(Self { api })
    }

    /// `Ok` for `HCCL_SUCCESS`, else the call's error with HCCL's description of the code.
    pub fn check(&self, call: &'static str, code: HcclResult) -> Result<(), HcclError> {
        if code == HcclResult::HCCL_SUCCESS {
            return Ok(());
        }
        // SAFETY: returns a static C string, or null.
        let p = unsafe { self.api.HcclGetErrorString(code) };
        let message = if p.is_null() { "no description".into() } else { unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned() };
        Err(HcclError::Call { call, code: code.0, message })
    }
}
