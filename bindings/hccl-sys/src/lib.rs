//! # hccl-sys
//!
//! Huawei's HCCL (collective communication on Ascend NPUs), loaded at run time, in the first two
//! of cudarc's three tiers (the safe communicator is `finetp-backend-ascend`'s):
//!
//! - [`sys`]: bindgen's output (`build.rs`): the C types and [`sys::Hccl`], HCCL's functions
//!   resolved from `libhccl.so` by `dlsym`;
//! - [`result`]: [`result::HcclLib`], the loaded library with every function checked present,
//!   and [`HcclError`] carrying HCCL's own message (`HcclGetErrorString`).
//!
//! The library is found as ascend-sys finds ACL's (`FINETP_HCCL_LIB`, the soname, CANN's
//! install directories).

pub mod result;

pub use result::{HcclError, HcclLib};

/// The generated bindings (see `build.rs`).
pub mod sys {
    #![allow(non_camel_case_types, non_snake_case, non_upper_case_globals, dead_code, unsafe_op_in_unsafe_fn, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/hccl.rs"));
}

/// Where this build's bindings came from.
pub const HEADERS: &str = env!("HCCL_SYS_HEADERS");

/// Bytes of an HCCL root info (`HcclRootInfo`), what a group's members exchange to connect.
pub const ROOT_INFO_BYTES: usize = std::mem::size_of::<sys::HcclRootInfo>();
