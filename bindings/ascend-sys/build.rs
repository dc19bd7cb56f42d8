//! Runs bindgen over the ACL runtime and the aclnn operators, generating dynamic-loading
//! bindings (one `AscendApi` struct whose methods call through symbols resolved at run time).
//!
//! Which declarations it reads:
//! - CANN's own `<acl/acl.h>` when CANN is installed (`ASCEND_TOOLKIT_HOME` or
//!   `ASCEND_HOME_PATH` with `include/acl/acl.h`), or when `FINETP_ASCEND_INCLUDE` names the
//!   include directories of such headers (`tools/ascend/check_headers.sh` uses it);
//! - otherwise finetp's own `include/finetp_acl.h`, written from the public API reference.
//!
//! aclnn is always `include/finetp_aclnn.h` (no registry ships its headers). Bindings made from
//! CANN's headers are never committed (their licence). Made from ours they are also kept in
//! `src/generated/ascend.rs`, which a build on a machine without libclang uses instead (with a
//! warning), so `cargo build` works everywhere; `FINETP_REQUIRE_BINDGEN=1` (CI) makes that
//! fallback an error, and `ci/ascend.sh` checks the kept copy equals bindgen's output.

include!("../build_common.rs");

/// Exactly the functions finetp calls, so the generated API is the same with either header.
const FUNCTIONS: &[&str] = &[
    // ACL runtime (libascendcl.so)
    "aclInit", "aclFinalize", "aclGetRecentErrMsg", "aclrtGetDeviceCount", "aclrtSetDevice", "aclrtResetDevice",
    "aclrtGetSocName", "aclrtGetMemInfo", "aclrtCreateContext", "aclrtDestroyContext", "aclrtSetCurrentContext",
    "aclrtCreateStream", "aclrtDestroyStream", "aclrtSynchronizeStream", "aclrtSynchronizeStreamWithTimeout",
    "aclrtMalloc", "aclrtFree", "aclrtMemcpy", "aclrtMemcpyAsync", "aclrtMemcpy2dAsync", "aclrtMemsetAsync",
    "aclmdlRICaptureBegin", "aclmdlRICaptureEnd", "aclmdlRIExecuteAsync", "aclmdlRIDestroy",
    // tensor descriptors (libnnopbase.so)
    "aclCreateTensor", "aclDestroyTensor", "aclCreateScalar", "aclDestroyScalar", "aclCreateIntArray", "aclDestroyIntArray",
];

/// The aclnn operators (libopapi.so / libopapi_*.so): each has `<op>GetWorkspaceSize` and `<op>`.
const OPERATORS: &[&str] = &[
    "aclnnMatmul", "aclnnBatchMatMul", "aclnnQuantMatmulV4", "aclnnDynamicQuant", "aclnnWeightQuantBatchMatmulV2",
    "aclnnRmsNorm", "aclnnRotaryPositionEmbedding", "aclnnSoftmax", "aclnnSilu", "aclnnSwiGlu", "aclnnEmbedding",
    "aclnnInplaceAdd", "aclnnInplaceMul", "aclnnArgMax", "aclnnCast",
];

fn main() {
    let here = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let include = here.join("include");
    for f in ["finetp_acl.h", "finetp_aclnn.h", "wrapper.h"] {
        println!("cargo:rerun-if-changed={}", include.join(f).display());
    }
    let vendor = vendor_includes("acl/acl.h");
    let fns = FUNCTIONS
        .iter()
        .map(|f| f.to_string())
        .chain(OPERATORS.iter().flat_map(|op| [format!("{op}GetWorkspaceSize"), op.to_string()]))
        .collect::<Vec<_>>()
        .join("|");
    let mut builder = base(&include.join("wrapper.h"), &include, "AscendApi")
        .allowlist_function(format!("^({fns})$"))
        .allowlist_type("^(acl.*|aclnnStatus)$")
        .allowlist_var("^(ACL_SUCCESS|ACL_ERROR_RT_STREAM_SYNC_TIMEOUT)$");
    if !vendor.is_empty() {
        builder = builder.clang_arg("-DFINETP_WITH_CANN");
        for dir in &vendor {
            builder = builder.clang_arg(format!("-I{}", dir.display()));
        }
    }
    emit(Bindings { krate: "ascend-sys", file: "ascend.rs", vendor: &vendor, builder });
}
