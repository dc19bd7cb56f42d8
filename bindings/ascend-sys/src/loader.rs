//! Finding a vendor library at run time.
//!
//! Order: the path in the library's environment variable (`FINETP_ASCENDCL_LIB`, …) when set,
//! and nothing else then (an explicit choice that fails is reported, not second-guessed);
//! otherwise the soname through the dynamic loader's own search (`LD_LIBRARY_PATH`, the cache),
//! then `lib64/` under `$ASCEND_TOOLKIT_HOME`, `$ASCEND_HOME_PATH` and CANN's default install
//! `/usr/local/Ascend/ascend-toolkit/latest`.

use std::ffi::OsString;
use std::path::PathBuf;

/// A library that could not be loaded: which one, every place tried, and the loader's message
/// for the last of them.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot load {lib} (tried {}): {dlerror}", .tried.join(", "))]
pub struct LoadError {
    pub lib: String,
    pub tried: Vec<String>,
    pub dlerror: String,
}

/// One library to look for.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    /// The soname, e.g. `libascendcl.so`.
    pub soname: &'static str,
    /// The environment variable that names an explicit path, e.g. `FINETP_ASCENDCL_LIB`.
    pub env: &'static str,
}

/// The paths to try for `c`, in order.
pub fn search_paths(c: Candidate) -> Vec<OsString> {
    if let Some(p) = std::env::var_os(c.env).filter(|p| !p.is_empty()) {
        return vec![p];
    }
    let mut out = vec![OsString::from(c.soname)];
    let homes = ["ASCEND_TOOLKIT_HOME", "ASCEND_HOME_PATH"].iter().filter_map(std::env::var_os).map(PathBuf::from);
    for home in homes.chain([PathBuf::from("/usr/local/Ascend/ascend-toolkit/latest")]) {
        let p = home.join("lib64").join(c.soname);
        if !out.contains(&p.clone().into_os_string()) {
            out.push(p.into_os_string());
        }
    }
    out
}

/// Loads the first path of [`search_paths`] that `open` accepts.
///
/// # Safety
/// `open` runs the library's initialisers (it is bindgen's `new`): the library must be the
/// one named, with the ABI the bindings were generated for.
pub unsafe fn load<T>(c: Candidate, open: impl Fn(&OsString) -> Result<T, libloading::Error>) -> Result<T, LoadError> {
    let paths = search_paths(c);
    let mut last = String::new();
    for p in &paths {
        match open(p) {
            Ok(t) => return Ok(t),
            Err(e) => last = chain(&e),
        }
    }
    let mut tried: Vec<String> = paths.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if std::env::var_os(c.env).is_none() {
        tried.insert(0, format!("${} unset", c.env));
    }
    Err(LoadError { lib: c.soname.to_string(), tried, dlerror: last })
}

/// An error and its sources on one line (libloading's `Display` alone says only "dlopen failed").
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_names_itself_every_place_tried_and_the_loaders_message() {
        let c = Candidate { soname: "libfinetp-no-such-lib.so", env: "FINETP_NO_SUCH_LIB_FOR_TEST" };
        // SAFETY: the library does not exist, so no initialiser runs.
        let e = unsafe { load(c, |p| libloading::Library::new(p)) }.expect_err("no such library");
        let msg = e.to_string();
        assert!(msg.starts_with("cannot load libfinetp-no-such-lib.so (tried $FINETP_NO_SUCH_LIB_FOR_TEST unset, libfinetp-no-such-lib.so, "), "{msg}");
        assert!(msg.contains("/usr/local/Ascend/ascend-toolkit/latest/lib64/libfinetp-no-such-lib.so"), "{msg}");
        assert!(msg.contains("cannot open shared object file"), "the loader's own reason is kept: {msg}");
    }
}
