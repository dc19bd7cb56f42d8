//! Token sampling and MoE routing on wgpu: both read their inputs back and run the CPU
//! backend's reference code on the host, then write the result back to the device (so they
//! obey the contract exactly, but are sync points and cannot be captured; device kernels for
//! them are future work, noted in `docs/backends.md`).

use finetp_backend_cpu::CpuStorage;
use finetp_core::backend::{Backend, BackendError, HostTensor, Kernels, MoeRouting, Tensor, checks};

use crate::WgpuBackend;

/// A CPU twin of a wgpu tensor (downloaded).
fn to_cpu(be: &WgpuBackend, t: &Tensor<WgpuBackend>) -> Result<Tensor<finetp_backend_cpu::CpuBackend>, BackendError> {
    let host = be.download(t)?;
    let dtype = host.dtype();
    Ok(Tensor::from_parts(CpuStorage::from_host(host.data), host.shape, dtype))
}

/// A CPU tensor's contents into an existing wgpu tensor of the same shape and dtype.
fn from_cpu(be: &WgpuBackend, c: Tensor<finetp_backend_cpu::CpuBackend>, dst: &mut Tensor<WgpuBackend>) -> Result<(), BackendError> {
    let shape = c.shape().to_vec();
    be.write(dst, &HostTensor::new(c.into_buffer().into_host(), &shape)?)
}

pub(super) fn sample(be: &WgpuBackend, logits: &Tensor<WgpuBackend>, params: &Tensor<WgpuBackend>, ids: &mut Tensor<WgpuBackend>) -> Result<(), BackendError> {
    checks::sample(logits, params, ids)?;
    let cpu = be.cpu()?;
    let mut out = to_cpu(be, ids)?;
    cpu.sample(&to_cpu(be, logits)?, &to_cpu(be, params)?, &mut out)?;
    from_cpu(be, out, ids)
}

pub(super) fn moe_route(
    be: &WgpuBackend,
    logits: &Tensor<WgpuBackend>,
    bias: Option<&Tensor<WgpuBackend>>,
    rule: &MoeRouting,
    ids: &mut Tensor<WgpuBackend>,
    weights: &mut Tensor<WgpuBackend>,
) -> Result<(), BackendError> {
    checks::moe_route(logits, bias, rule, ids, weights)?;
    let cpu = be.cpu()?;
    let bias = bias.map(|b| to_cpu(be, b)).transpose()?;
    let (mut i, mut w) = (to_cpu(be, ids)?, to_cpu(be, weights)?);
    cpu.moe_route(&to_cpu(be, logits)?, bias.as_ref(), rule, &mut i, &mut w)?;
    from_cpu(be, i, ids)?;
    from_cpu(be, w, weights)
}
