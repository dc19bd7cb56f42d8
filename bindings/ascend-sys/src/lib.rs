//! # ascend-sys
//!
//! Ascend's ACL runtime and aclnn operators, loaded at run time, in the first two of cudarc's
//! three tiers (the safe types live in `finetp-backend-ascend`):
//!
//! - [`sys`]: what bindgen generates (`build.rs`): the C types, and [`sys::AscendApi`], one
//!   struct of function pointers resolved from a shared library by `dlopen`/`dlsym`. A symbol
//!   the library lacks is an `Err` field, never a load failure; calling its method would
//!   panic, so the layer above checks first.
//! - [`loader`] finds the libraries (an explicit path from the environment, the soname, CANN's
//!   install directories) and reports a missing one as [`LoadError`], naming the library, every
//!   place tried and the loader's own message.
//! - [`result`]: [`result::Acl`], the loaded runtime, tensor and operator libraries, with
//!   every call returning `Result<_, AclError>` that carries ACL's own message
//!   (`aclGetRecentErrMsg`).
//!
//! Nothing here links against CANN: a binary built with it starts, and reports, on a machine
//! without it.

pub mod loader;
pub mod result;

pub use loader::{Candidate, LoadError};
pub use result::{Acl, AclError};

/// The generated bindings (see `build.rs`).
pub mod sys {
    #![allow(non_camel_case_types, non_snake_case, non_upper_case_globals, dead_code, unsafe_op_in_unsafe_fn, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/ascend.rs"));
}

/// Where this build's bindings came from (CANN's headers, finetp's own declarations, or the
/// kept copy when the build machine had no libclang), for `describe()` and the docs.
pub const HEADERS: &str = env!("ASCEND_SYS_HEADERS");
