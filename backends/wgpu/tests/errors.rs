//! Bad input comes back as an `Err`, never a panic: shapes and dtypes are checked when a call
//! is enqueued; KV-cache rows outside the cache (device-side indices) are found by the kernel
//! and reported at the next sync point, after which the backend keeps working. A machine
//! without a driver gets `BackendError::Unavailable` with an install hint.

mod common;

use common::*;
use finetp_backend_wgpu::WgpuBackend;
use finetp_core::backend::{Backend, BackendError, DType, Gemm, HostData, HostTensor, Kernels, RopeStyle};

fn shape_err<T: std::fmt::Debug>(r: Result<T, BackendError>, what: &str) {
    assert!(matches!(r, Err(BackendError::Shape(_))), "{what}: expected a shape error, got {r:?}");
}

fn dtype_err<T: std::fmt::Debug>(r: Result<T, BackendError>, what: &str) {
    assert!(matches!(r, Err(BackendError::DType { .. })), "{what}: expected a dtype error, got {r:?}");
}

#[test]
fn bad_shapes_and_dtypes_are_errors() {
    let Some(be) = backend() else { return };
    let f = |shape: &[usize]| be.zeros(shape, DType::F32).unwrap();
    let u = |shape: &[usize]| be.zeros(shape, DType::U32).unwrap();
    let bf = |shape: &[usize]| be.zeros(shape, DType::BF16).unwrap();
    // GEMM
    shape_err(be.linear(&f(&[2, 3]), &f(&[4, 5]), None, &mut f(&[2, 4])), "linear k mismatch");
    shape_err(be.linear(&f(&[2, 3]), &f(&[4, 3]), None, &mut f(&[2, 5])), "linear y shape");
    shape_err(be.linear(&f(&[2, 3]), &f(&[4, 3]), Some(&f(&[5])), &mut f(&[2, 4])), "linear bias length");
    shape_err(be.linear(&f(&[6]), &f(&[4, 3]), None, &mut f(&[2, 4])), "linear 1-D x");
    dtype_err(be.linear(&f(&[2, 3]), &u(&[4, 3]), None, &mut f(&[2, 4])), "linear u32 weights");
    dtype_err(be.linear(&bf(&[2, 3]), &f(&[4, 3]), None, &mut f(&[2, 4])), "linear bf16 x");
    shape_err(be.batched_linear(&f(&[2, 1, 3]), &f(&[3, 4, 3]), &mut f(&[2, 1, 4])), "batched batch mismatch");
    // Kernels
    shape_err(be.embedding(&u(&[3]), &f(&[10, 4]), 0, &mut f(&[3, 5])), "embedding y width");
    dtype_err(be.embedding(&f(&[3]), &f(&[10, 4]), 0, &mut f(&[3, 4])), "embedding f32 ids");
    dtype_err(be.embedding(&u(&[3]), &u(&[10, 4]), 0, &mut f(&[3, 4])), "embedding u32 table");
    shape_err(be.rms_norm(&f(&[2, 8]), &f(&[7]), 1e-5, &mut f(&[2, 8])), "rms_norm weight length");
    shape_err(be.rms_norm(&f(&[2, 8]), &f(&[8]), 1e-5, &mut f(&[2, 9])), "rms_norm y shape");
    shape_err(be.rope(&mut f(&[2, 8]), &u(&[2]), &f(&[2]), RopeStyle::Neox), "rope 2-D x");
    shape_err(be.rope(&mut f(&[2, 1, 8]), &u(&[3]), &f(&[2]), RopeStyle::Neox), "rope positions length");
    shape_err(be.rope(&mut f(&[2, 1, 8]), &u(&[2]), &f(&[5]), RopeStyle::Neox), "rope rotary dim");
    dtype_err(be.rope(&mut f(&[2, 1, 8]), &f(&[2]), &f(&[2]), RopeStyle::Neox), "rope f32 positions");
    shape_err(be.silu_mul(&f(&[2, 7]), &mut f(&[2, 4])), "silu_mul odd gate_up");
    shape_err(be.add_assign(&mut f(&[2, 3]), &f(&[3, 2])), "add_assign shapes");
    dtype_err(be.scale(&mut u(&[4]), 2.0), "scale u32");
    shape_err(be.kv_cache_write(&f(&[2, 1, 4]), &mut f(&[2, 5, 1, 3]), &u(&[2]), &u(&[2])), "kv write row width");
    shape_err(be.kv_cache_write(&f(&[2, 1, 4]), &mut f(&[2, 5, 1, 4]), &u(&[3]), &u(&[2])), "kv write slots length");
    shape_err(be.kv_cache_attention(&f(&[1, 3, 4]), &f(&[2, 5, 2, 4]), &f(&[2, 5, 2, 4]), &u(&[1]), &u(&[1]), 1.0, &mut f(&[1, 3, 4])), "attention heads not a multiple of kv heads");
    shape_err(be.kv_cache_attention(&f(&[1, 4, 4]), &f(&[2, 5, 2, 4]), &f(&[2, 6, 2, 4]), &u(&[1]), &u(&[1]), 1.0, &mut f(&[1, 4, 4])), "attention k/v caches differ");
    shape_err(be.argmax(&f(&[2, 3, 4])), "argmax 3-D");
    dtype_err(be.argmax(&u(&[2, 3])), "argmax u32");
    // Memory
    shape_err(be.copy_block(&f(&[3, 4]), 2, 0, &mut f(&[3, 4]), 0, 0, 2, 4), "copy_block past the source");
    shape_err(be.copy_block(&f(&[3, 4]), 0, 0, &mut bf(&[3, 4]), 0, 0, 1, 1), "copy_block dtype");
    shape_err(be.write(&mut f(&[2, 2]), &HostTensor::f32(vec![0.0; 6], &[2, 3]).unwrap()), "write shape");
    let bad = HostTensor { data: HostData::F32(vec![1.0; 3]), shape: vec![2, 2] };
    shape_err(be.upload(&bad), "upload of a host tensor whose data does not fill its shape");
    shape_err(f(&[2, 3]).reshape(&[7]), "reshape");
    // Still usable.
    let t = be.upload(&HostTensor::f32(vec![1.0, 2.0], &[2]).unwrap()).unwrap();
    assert_eq!(f32s_of(&be, &t), vec![1.0, 2.0]);
}

#[test]
fn kv_cache_rows_outside_the_cache_are_reported_at_the_next_sync_point() {
    let Some(be) = backend() else { return };
    let (s, l, n, d) = (2, 4, 1, 8);
    let mut cache = be.zeros(&[s, l, n, d], DType::F32).unwrap();
    let x = be.upload(&HostTensor::f32(vec![1.0; 3 * n * d], &[3, n, d]).unwrap()).unwrap();
    let slots = be.upload(&HostTensor::u32(vec![0, 1, 2], &[3]).unwrap()).unwrap();
    let pos = be.upload(&HostTensor::u32(vec![0, 3, 0], &[3]).unwrap()).unwrap();
    be.kv_cache_write(&x, &mut cache, &slots, &pos).expect("enqueued: the indices are on the device");
    let err = be.synchronize().expect_err("row 2 addresses slot 2 of 2");
    let msg = err.to_string();
    assert!(matches!(err, BackendError::Shape(_)) && msg.contains("kv_cache_write") && msg.contains("row 2") && msg.contains("slot 2"), "{msg}");
    // The in-range rows were written and the error is cleared.
    let c = f32s_of(&be, &cache);
    assert!(c[..d].iter().all(|v| *v == 1.0) && c[(l + 3) * d..(l + 4) * d].iter().all(|v| *v == 1.0));
    be.synchronize().expect("the error was reported once");
    // Attention too, reported by a download.
    let q = be.zeros(&[1, 2, d], DType::F32).unwrap();
    let mut y = be.zeros(&[1, 2, d], DType::F32).unwrap();
    let one = |v: u32| be.upload(&HostTensor::u32(vec![v], &[1]).unwrap()).unwrap();
    be.kv_cache_attention(&q, &cache, &cache, &one(0), &one(9), 1.0, &mut y).expect("enqueued");
    let err = be.download(&y).expect_err("position 9 of 4");
    assert!(err.to_string().contains("kv_cache_attention"), "{err}");
    assert_eq!(f32s_of(&be, &y), vec![0.0; 2 * d], "the bad row got zeros");
}

#[test]
fn tensors_beyond_the_binding_limit_that_cannot_be_split_are_errors() {
    let Some(be) = open(finetp_backend_wgpu::WgpuOptions { max_binding_bytes: Some(4096), ..Default::default() }) else { return };
    let x = be.zeros(&[2, 1024], DType::F32).unwrap(); // 8 KiB activation: one binding only
    let mut y = be.zeros(&[2, 1024], DType::F32).unwrap();
    let r = be.silu_mul(&be.zeros(&[2, 2048], DType::F32).unwrap(), &mut y);
    assert!(matches!(r, Err(BackendError::Unsupported(_))), "{r:?}");
    let r = be.add_assign(&mut y, &x);
    assert!(matches!(r, Err(BackendError::Unsupported(_))), "{r:?}");
    // A weight row wider than a binding cannot be windowed.
    let w = be.zeros(&[2, 2048], DType::F32).unwrap();
    let mut o = be.zeros(&[1, 2], DType::F32).unwrap();
    let r = be.linear(&be.zeros(&[1, 2048], DType::F32).unwrap(), &w, None, &mut o);
    assert!(matches!(r, Err(BackendError::Unsupported(_))), "{r:?}");
}

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
