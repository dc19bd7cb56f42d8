//! Runs bindgen over HCCL, generating dynamic-loading bindings (the `Hccl` struct): over CANN's
//! `<hccl/hccl.h>` (in C++ mode, which it needs) where CANN is installed or
//! `FINETP_ASCEND_INCLUDE` names such headers, else over finetp's own `include/finetp_hccl.h`.
//! The fallback without libclang and its check are ascend-sys's (`../build_common.rs`).

include!("../build_common.rs");

const FUNCTIONS: &[&str] = &[
    "HcclGetRootInfo", "HcclCommInitRootInfo", "HcclCommDestroy", "HcclGetRankSize", "HcclGetRankId",
    "HcclGetErrorString", "HcclGetCommAsyncError", "HcclAllReduce", "HcclBroadcast", "HcclAllGather",
    "HcclAllGatherV", "HcclReduceScatter", "HcclReduceScatterV", "HcclAlltoAll", "HcclAlltoAllV", "HcclBarrier",
];

fn main() {
    let here = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let include = here.join("include");
    for f in ["finetp_hccl.h", "wrapper.h"] {
        println!("cargo:rerun-if-changed={}", include.join(f).display());
    }
    let vendor = vendor_includes("hccl/hccl.h");
    let mut builder = base(&include.join("wrapper.h"), &include, "Hccl")
        .allowlist_function(format!("^({})$", FUNCTIONS.join("|")))
        .allowlist_type("^(Hccl(Result|DataType|ReduceOp|Comm|RootInfo)|HcclRootInfoDef)$")
        .blocklist_type("^aclrtStream$")
        .raw_line("pub use ascend_sys::sys::aclrtStream;");
    if !vendor.is_empty() {
        builder = builder.clang_arg("-DFINETP_WITH_CANN").clang_arg("-xc++").clang_arg("-std=c++14");
        for dir in &vendor {
            builder = builder.clang_arg(format!("-I{}", dir.display()));
        }
    }
    emit(Bindings { krate: "hccl-sys", file: "hccl.rs", vendor: &vendor, builder });
}
