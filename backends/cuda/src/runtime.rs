//! What the process needs from CUDA before the first cudarc call: cudarc panics when a library
//! it loads on first use is missing, so every library is checked with `is_culib_present`
//! (which never panics) and an absent one becomes [`BackendError::Unavailable`] naming it.

use finetp_core::backend::BackendError;

/// A library a rank needs: what it is, where it comes from, and whether it loads.
struct Lib {
    name: &'static str,
    hint: &'static str,
    present: fn() -> bool,
}

/// In the order they are checked.
const LIBS: [Lib; 3] = [
    Lib { name: "libcuda.so.1 (the NVIDIA driver)", hint: "install the NVIDIA driver (nvidia-smi must work)", present: driver_present },
    Lib { name: "libnvrtc.so.13 (NVRTC, CUDA 13)", hint: "install the CUDA 13 toolkit or `pip install nvidia-cuda-nvrtc`, and put its lib directory on LD_LIBRARY_PATH", present: nvrtc_present },
    Lib { name: "libcublasLt.so.13 (cuBLASLt, CUDA 13)", hint: "install the CUDA 13 toolkit or `pip install nvidia-cublas`, and put its lib directory on LD_LIBRARY_PATH", present: cublaslt_present },
];

fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the candidate names; never calls into the library.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

fn nvrtc_present() -> bool {
    // SAFETY: as above.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

fn cublaslt_present() -> bool {
    // SAFETY: as above.
    unsafe { cudarc::cublaslt::sys::is_culib_present() }
}

/// Errors with the first library this machine lacks: the driver first (`which` = `..1`), then
/// the toolkit libraries (`1..`), so a machine without a GPU says that before anything else.
///
/// # Errors
/// [`BackendError::Unavailable`] naming the library and how to get it.
pub(crate) fn check_libraries(which: std::ops::Range<usize>) -> Result<(), BackendError> {
    for lib in &LIBS[which] {
        if !(lib.present)() {
            return Err(BackendError::Unavailable { backend: "cuda", missing: format!("cannot load {}", lib.name), hint: lib.hint.into() });
        }
    }
    Ok(())
}

/// A driver error as a backend error.
pub(crate) fn driver_err(what: &str, e: cudarc::driver::DriverError) -> BackendError {
    BackendError::device(format!("CUDA {what}"), e)
}

/// The driver's answer to `cuInit` / `cuDeviceGetCount`, with a missing GPU as `Unavailable`.
pub(crate) fn device_count() -> Result<usize, BackendError> {
    use cudarc::driver::sys::cudaError_enum as E;
    let no_gpu = || BackendError::Unavailable { backend: "cuda", missing: "an NVIDIA GPU (the driver found none)".into(), hint: "run on a machine with an NVIDIA GPU, or check CUDA_VISIBLE_DEVICES".into() };
    match cudarc::driver::result::init().and_then(|()| cudarc::driver::result::device::get_count()) {
        Ok(0) => Err(no_gpu()),
        Ok(n) => Ok(n as usize),
        Err(e) if e.0 == E::CUDA_ERROR_NO_DEVICE => Err(no_gpu()),
        Err(e) => Err(driver_err("cuInit", e)),
    }
}
