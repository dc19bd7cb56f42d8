//! The process's CANN libraries: loaded and `aclInit`ed once, on the first `open`, and kept
//! for the life of the process (ACL is initialised once per process; its libraries are never
//! unloaded while a device handle could still call them).

use std::sync::OnceLock;

use ascend_sys::Acl;
use finetp_core::backend::BackendError;
use hccl_sys::HcclLib;

static ACL: OnceLock<Result<Acl, String>> = OnceLock::new();
static HCCL: OnceLock<Result<HcclLib, String>> = OnceLock::new();

const HINT: &str = "install CANN (the Ascend toolkit) and `source set_env.sh`, or name the library's path in FINETP_ASCENDCL_LIB / FINETP_NNOPBASE_LIB / FINETP_OPAPI_LIB";

/// The ACL runtime, tensor and operator libraries, initialised.
///
/// # Errors
/// [`BackendError::Unavailable`] naming the library or function missing, or ACL's own error
/// from `aclInit`.
pub(crate) fn acl() -> Result<&'static Acl, BackendError> {
    let r = ACL.get_or_init(|| {
        let acl = Acl::load().map_err(|e| e.to_string())?;
        acl.init().map_err(|e| e.to_string())?;
        Ok(acl)
    });
    r.as_ref().map_err(|e| BackendError::Unavailable { backend: "ascend", missing: e.clone(), hint: HINT.into() })
}

/// HCCL, loaded on the first group of more than one member.
pub(crate) fn hccl() -> Result<&'static HcclLib, BackendError> {
    let r = HCCL.get_or_init(|| HcclLib::load().map_err(|e| e.to_string()));
    r.as_ref().map_err(|e| BackendError::Unavailable {
        backend: "ascend",
        missing: e.clone(),
        hint: "HCCL ships with CANN (lib64/libhccl.so); or name its path in FINETP_HCCL_LIB".into(),
    })
}

/// An ACL error as a backend error.
pub(crate) fn device_err(e: ascend_sys::AclError) -> BackendError {
    BackendError::device("ACL", e)
}
