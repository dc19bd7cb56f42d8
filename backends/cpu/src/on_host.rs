//! The CPU reference's kernels run for another backend on its tensors' host copies: what a
//! backend without a device kernel for an op does (wgpu's sampling and routing; Ascend's RoPE,
//! temperature sampling and routing). Each call reads its inputs back, computes on the CPU and
//! writes the results into the device tensors, so it obeys the contract exactly and is a sync
//! point (and so cannot be captured into a graph).

use finetp_core::backend::{Backend, BackendError, HostTensor, Kernels, MoeRouting, RopeTable, Tensor};

use crate::{CpuBackend, CpuStorage};

/// A CPU twin of a device tensor (downloaded).
pub fn to_cpu<B: Backend>(be: &B, t: &Tensor<B>) -> Result<Tensor<CpuBackend>, BackendError> {
    let host = be.download(t)?;
    let dtype = host.dtype();
    Ok(Tensor::from_parts(CpuStorage::from_host(host.data), host.shape, dtype))
}

/// A CPU tensor's contents into an existing device tensor of the same shape and dtype.
pub fn from_cpu<B: Backend>(be: &B, c: Tensor<CpuBackend>, dst: &mut Tensor<B>) -> Result<(), BackendError> {
    let shape = c.shape().to_vec();
    be.write(dst, &HostTensor::new(c.into_buffer().into_host(), &shape)?)
}

/// [`Kernels::sample`] on the host.
pub fn sample<B: Backend>(be: &B, cpu: &CpuBackend, logits: &Tensor<B>, params: &Tensor<B>, ids: &mut Tensor<B>) -> Result<(), BackendError> {
    let mut out = to_cpu(be, ids)?;
    cpu.sample(&to_cpu(be, logits)?, &to_cpu(be, params)?, &mut out)?;
    from_cpu(be, out, ids)
}

/// [`Kernels::moe_route`] on the host.
pub fn moe_route<B: Backend>(
    be: &B,
    cpu: &CpuBackend,
    logits: &Tensor<B>,
    bias: Option<&Tensor<B>>,
    rule: &MoeRouting,
    ids: &mut Tensor<B>,
    weights: &mut Tensor<B>,
) -> Result<(), BackendError> {
    let bias = bias.map(|b| to_cpu(be, b)).transpose()?;
    let (mut i, mut w) = (to_cpu(be, ids)?, to_cpu(be, weights)?);
    cpu.moe_route(&to_cpu(be, logits)?, bias.as_ref(), rule, &mut i, &mut w)?;
    from_cpu(be, i, ids)?;
    from_cpu(be, w, weights)
}

/// [`Kernels::rope`] on the host (`inv_freq` read back too).
pub fn rope<B: Backend>(be: &B, cpu: &CpuBackend, x: &mut Tensor<B>, positions: &Tensor<B>, table: &RopeTable<B>) -> Result<(), BackendError> {
    let mut cx = to_cpu(be, x)?;
    let t = RopeTable { inv_freq: to_cpu(be, &table.inv_freq)?, style: table.style, attention_factor: table.attention_factor };
    cpu.rope(&mut cx, &to_cpu(be, positions)?, &t)?;
    from_cpu(be, cx, x)
}
