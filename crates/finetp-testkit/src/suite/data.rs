//! The same data on the backend under test and on the CPU reference, and the way back.

use finetp_backend_cpu::{CpuBackend, CpuTensor};
use finetp_core::backend::{Backend, DType, Device, HostData, HostTensor, Tensor};
use half::{bf16, f16};

/// The backend under test and the CPU reference, side by side.
pub struct Pair<'a, B: Device> {
    pub be: &'a B,
    pub cpu: &'a CpuBackend,
}

/// Host data of `v` stored as `dtype` (floats rounded to nearest; `U32` truncates).
pub fn host(v: &[f32], shape: &[usize], dtype: DType) -> HostTensor {
    let data = match dtype {
        DType::BF16 => HostData::BF16(v.iter().map(|&x| bf16::from_f32(x)).collect()),
        DType::F16 => HostData::F16(v.iter().map(|&x| f16::from_f32(x)).collect()),
        DType::U32 => HostData::U32(v.iter().map(|&x| x as u32).collect()),
        _ => HostData::F32(v.to_vec()),
    };
    HostTensor::new(data, shape).expect("test data fits its shape")
}

pub fn host_u32(v: &[u32], shape: &[usize]) -> HostTensor {
    HostTensor::u32(v.to_vec(), shape).expect("test data fits its shape")
}

/// `e` as a case failure naming `what`.
pub fn fail<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

impl<'a, B: Device> Pair<'a, B> {
    /// The backend's activation dtype (the CPU's is f32).
    pub fn act(&self) -> DType {
        self.be.activation_dtype()
    }

    /// `h` uploaded to both.
    pub fn both(&self, h: &HostTensor) -> Result<(Tensor<B>, CpuTensor), String> {
        Ok((self.be.upload(h).map_err(fail("upload"))?, self.cpu.upload(h).map_err(fail("cpu upload"))?))
    }

    /// Activations `v`: stored in each backend's activation dtype.
    pub fn acts(&self, v: &[f32], shape: &[usize]) -> Result<(Tensor<B>, CpuTensor), String> {
        let be = self.be.upload(&host(v, shape, self.act())).map_err(fail("upload"))?;
        let cpu = self.cpu.upload(&host(v, shape, DType::F32)).map_err(fail("cpu upload"))?;
        Ok((be, cpu))
    }

    /// Zero activations on both.
    pub fn zeros(&self, shape: &[usize]) -> Result<(Tensor<B>, CpuTensor), String> {
        Ok((self.be.zeros(shape, self.act()).map_err(fail("zeros"))?, self.cpu.zeros(shape, DType::F32).map_err(fail("cpu zeros"))?))
    }

    /// Zeros of `dtype` on both.
    pub fn zeros_of(&self, shape: &[usize], dtype: DType) -> Result<(Tensor<B>, CpuTensor), String> {
        Ok((self.be.zeros(shape, dtype).map_err(fail("zeros"))?, self.cpu.zeros(shape, dtype).map_err(fail("cpu zeros"))?))
    }

    /// Both tensors' values as f32 (the backend's first).
    pub fn f32s(&self, t: &Tensor<B>, c: &CpuTensor) -> Result<(Vec<f32>, Vec<f32>), String> {
        Ok((f32s(self.be, t)?, f32s(self.cpu, c)?))
    }
}

/// A float tensor's values as f32.
pub fn f32s<B: Backend>(be: &B, t: &Tensor<B>) -> Result<Vec<f32>, String> {
    be.download(t).map_err(fail("download"))?.to_f32_vec().ok_or_else(|| "expected a float tensor".into())
}

/// A u32 tensor's values.
pub fn u32s<B: Backend>(be: &B, t: &Tensor<B>) -> Result<Vec<u32>, String> {
    match be.download(t).map_err(fail("download"))?.data {
        HostData::U32(v) => Ok(v),
        other => Err(format!("expected u32, got {}", other.dtype())),
    }
}
