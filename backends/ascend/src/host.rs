//! The ops this backend runs on the host with the CPU reference's code (RoPE, sampling with a
//! temperature, MoE routing): their inputs are read back, the CPU computes, the result is
//! written back. Exactly the contract's numbers, at the price of a sync point; refused during
//! a capture.

use finetp_backend_cpu::{CpuBackend, CpuStorage};
use finetp_core::backend::{Backend, BackendError, HostTensor, Tensor};

use crate::AscendBackend;

/// A CPU twin of a device tensor (downloaded).
pub(crate) fn to_cpu(be: &AscendBackend, t: &Tensor<AscendBackend>) -> Result<Tensor<CpuBackend>, BackendError> {
    let host = be.download(t)?;
    let dtype = host.dtype();
    Ok(Tensor::from_parts(CpuStorage::from_host(host.data), host.shape, dtype))
}

/// A CPU tensor's contents into an existing device tensor of the same shape and dtype.
pub(crate) fn from_cpu(be: &AscendBackend, c: Tensor<CpuBackend>, dst: &mut Tensor<AscendBackend>) -> Result<(), BackendError> {
    let shape = c.shape().to_vec();
    be.write(dst, &HostTensor::new(c.into_buffer().into_host(), &shape)?)
}

/// A u32 device tensor's values.
pub(crate) fn u32s(be: &AscendBackend, t: &Tensor<AscendBackend>) -> Result<Vec<u32>, BackendError> {
    match be.download(t)?.data {
        finetp_core::backend::HostData::U32(v) => Ok(v),
        other => Err(BackendError::DType { op: "index", expected: "u32", got: other.dtype() }),
    }
}
