//! Shared helpers of the wgpu-specific cases: opening the backend with options, CPU twins of
//! wgpu tensors, data. The cases only run where the harness found an adapter.
#![allow(dead_code)]

use finetp_backend_cpu::{CpuBackend, CpuStorage, CpuTensor};
use finetp_backend_wgpu::{WgpuBackend, WgpuOptions, WgpuTensor};
use finetp_core::backend::{Backend, DType, HostData, HostTensor, Tensor};
use half::{bf16, f16};

pub use finetp_testkit::Rng;

/// The wgpu backend (the harness has checked that an adapter exists).
pub fn backend() -> WgpuBackend {
    open(WgpuOptions::default())
}

pub fn open(opts: WgpuOptions) -> WgpuBackend {
    WgpuBackend::with_options(opts).expect("opening the wgpu backend")
}

/// A CPU backend with 2 threads, the reference.
pub fn cpu() -> CpuBackend {
    CpuBackend::new(2).expect("pool")
}

/// Host data of `v` stored as `dtype` (rounded to nearest).
pub fn host(v: &[f32], shape: &[usize], dtype: DType) -> HostTensor {
    let data = match dtype {
        DType::F32 => HostData::F32(v.to_vec()),
        DType::BF16 => HostData::BF16(v.iter().map(|&x| bf16::from_f32(x)).collect()),
        DType::F16 => HostData::F16(v.iter().map(|&x| f16::from_f32(x)).collect()),
        _ => HostData::U32(v.iter().map(|&x| x as u32).collect()),
    };
    HostTensor::new(data, shape).expect("test bug: data does not fit the shape")
}

pub fn host_u32(v: &[u32], shape: &[usize]) -> HostTensor {
    HostTensor::u32(v.to_vec(), shape).expect("test bug: data does not fit the shape")
}

/// The same host tensor on both backends.
pub fn both(be: &WgpuBackend, cpu: &CpuBackend, h: &HostTensor) -> (WgpuTensor, CpuTensor) {
    (be.upload(h).expect("wgpu upload"), cpu.upload(h).expect("cpu upload"))
}

pub fn zeros_both(be: &WgpuBackend, cpu: &CpuBackend, shape: &[usize], dtype: DType) -> (WgpuTensor, CpuTensor) {
    (be.zeros(shape, dtype).expect("wgpu zeros"), cpu.zeros(shape, dtype).expect("cpu zeros"))
}

pub fn f32s_of(be: &WgpuBackend, t: &WgpuTensor) -> Vec<f32> {
    be.download(t).expect("download").to_f32_vec().expect("float tensor")
}

pub fn cpu_f32s(t: &CpuTensor) -> Vec<f32> {
    t.buffer().as_f32("test").expect("f32").to_vec()
}

pub fn cpu_tensor(v: Vec<f32>, shape: &[usize]) -> CpuTensor {
    Tensor::from_parts(CpuStorage::F32(v), shape.to_vec(), DType::F32)
}

/// `|got - want| <= rel * max(1, |want|)` elementwise, with the worst offender in the message.
pub fn assert_close(got: &[f32], want: &[f32], rel: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let mut worst = (0usize, 0f32);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs() / w.abs().max(1.0);
        // NaN counts as the worst error.
        if err.is_nan() || err > worst.1 {
            worst = (i, if err.is_nan() { f32::INFINITY } else { err });
        }
    }
    let (i, e) = worst;
    assert!(e <= rel, "{what}: element {i}: got {} want {} (error {e:e} > tolerance {rel:e} relative to max(1, |want|))", got.get(i).copied().unwrap_or(f32::NAN), want.get(i).copied().unwrap_or(f32::NAN));
}

/// Bit-for-bit equality, with the first difference in the message.
pub fn assert_bits(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    if let Some(i) = got.iter().zip(want).position(|(g, w)| g.to_bits() != w.to_bits()) {
        panic!("{what}: element {i}: got {} want {} (exact match required)", got[i], want[i]);
    }
}

/// Fraction of elements that differ in their bits, and the largest relative difference.
pub fn diff_stats(got: &[f32], want: &[f32]) -> (f64, f32) {
    let n = got.len().max(1);
    let differ = got.iter().zip(want).filter(|(g, w)| g.to_bits() != w.to_bits()).count();
    let worst = got.iter().zip(want).map(|(g, w)| (g - w).abs() / w.abs().max(1e-30)).fold(0f32, f32::max);
    (differ as f64 / n as f64, worst)
}
