// Shared by the build scripts of ascend-sys and hccl-sys (`include!`d): running bindgen with
// the kept copy as the fallback when the build machine has no libclang.

use std::path::{Path, PathBuf};

/// One set of bindings to make.
struct Bindings<'a> {
    /// The crate's name, for messages.
    krate: &'static str,
    /// The generated file's name in OUT_DIR and under `src/generated/`.
    file: &'static str,
    /// The include directories of the vendor's headers, when they are to be read (empty: ours).
    vendor: &'a [PathBuf],
    /// The builder, configured; `generate` is called here.
    builder: bindgen::Builder,
}

/// Common settings: dynamic loading, missing symbols allowed (checked at run time), newtype
/// enums, no layout tests or comments, a formatter that is always there.
fn base(header: &Path, include: &Path, library: &str) -> bindgen::Builder {
    bindgen::Builder::default()
        .header(header.to_string_lossy())
        .clang_arg(format!("-I{}", include.display()))
        .dynamic_library_name(library)
        .dynamic_link_require_all(false)
        .default_enum_style(bindgen::EnumVariation::NewType { is_bitfield: false, is_global: false })
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .formatter(bindgen::Formatter::Prettyplease)
}

/// The include directories named by `FINETP_ASCEND_INCLUDE`, else `include/` of the CANN install
/// that has `marker` (e.g. `acl/acl.h`).
fn vendor_includes(marker: &str) -> Vec<PathBuf> {
    for v in ["ASCEND_TOOLKIT_HOME", "ASCEND_HOME_PATH", "FINETP_ASCEND_INCLUDE", "FINETP_REQUIRE_BINDGEN", "LIBCLANG_PATH"] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    if let Some(list) = std::env::var_os("FINETP_ASCEND_INCLUDE") {
        return std::env::split_paths(&list).collect();
    }
    ["ASCEND_TOOLKIT_HOME", "ASCEND_HOME_PATH"]
        .iter()
        .filter_map(std::env::var_os)
        .map(|home| PathBuf::from(home).join("include"))
        .find(|inc| inc.join(marker).is_file())
        .into_iter()
        .collect()
}

/// Generates into OUT_DIR (or copies the kept file, see the crate's build.rs), and sets
/// `<CRATE>_HEADERS` for the crate to report.
fn emit(b: Bindings<'_>) {
    let here = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let kept = here.join("src/generated").join(b.file);
    println!("cargo:rerun-if-changed={}", kept.display());
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join(b.file);
    let env = format!("{}_HEADERS", b.krate.to_uppercase().replace('-', "_"));
    let ours = b.vendor.is_empty();
    let require = std::env::var("FINETP_REQUIRE_BINDGEN").is_ok_and(|v| v == "1");
    let builder = b.builder;
    // bindgen panics (rather than returning an error) when it cannot load libclang.
    let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || builder.generate().map_err(|e| e.to_string())));
    let made = match made {
        Ok(r) => r,
        Err(p) => Err(p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_else(|| "bindgen panicked".into())),
    };
    match made {
        Ok(code) => {
            std::fs::write(&out, code.to_string()).expect("writing the bindings to OUT_DIR");
            let from = if ours { "finetp's own declarations".to_string() } else { format!("the vendor's headers in {:?}", b.vendor) };
            println!("cargo:rustc-env={env}=bindgen over {from}");
        }
        Err(why) if ours && !require => {
            println!(
                "cargo:warning={}: bindgen could not run ({why}); using the kept bindings of finetp's own declarations (src/generated/{}). Install libclang (apt install libclang-dev) to generate them.",
                b.krate, b.file
            );
            std::fs::copy(&kept, &out).expect("copying the kept bindings");
            println!("cargo:rustc-env={env}=the kept bindings of finetp's own declarations (no libclang at build time)");
        }
        Err(why) => panic!("{}: bindgen failed over {}: {why}", b.krate, if ours { "finetp's own declarations" } else { "the vendor's headers" }),
    }
}
