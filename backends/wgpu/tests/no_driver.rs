//! A machine without a Vulkan driver gets `BackendError::Unavailable` with an install hint, not
//! a panic: a child process runs with the loader pointed at no driver at all. (Needs no device,
//! so it always runs.)

use finetp_backend_wgpu::WgpuBackend;
use finetp_core::backend::{Backend, BackendError};

/// Run by `no_driver_is_unavailable` in a child process whose Vulkan loader finds no driver.
#[test]
#[ignore = "run by no_driver_is_unavailable in a child process"]
fn child_open_without_a_driver() {
    match WgpuBackend::new() {
        Err(BackendError::Unavailable { backend, missing, hint }) => {
            assert_eq!(backend, "wgpu");
            assert!(hint.contains("mesa-vulkan-drivers"), "{hint}");
            println!("UNAVAILABLE-OK: {missing}");
        }
        Ok(be) => println!("UNEXPECTED-ADAPTER: {}", be.describe()),
        Err(e) => panic!("expected Unavailable, got {e}"),
    }
}

#[test]
fn no_driver_is_unavailable() {
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new(exe)
        .args(["--ignored", "--exact", "child_open_without_a_driver", "--nocapture"])
        .env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
        .env("VK_DRIVER_FILES", "/nonexistent/icd.json")
        .env("WGPU_BACKEND", "vulkan")
        .output()
        .expect("run the child test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("UNAVAILABLE-OK"), "no driver must give BackendError::Unavailable: {stdout}");
}
