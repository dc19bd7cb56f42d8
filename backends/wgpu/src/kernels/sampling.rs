//! Token sampling and MoE routing on wgpu: both run the CPU backend's reference code on the
//! host (`finetp_backend_cpu::on_host`), so they obey the contract exactly, but are sync points
//! and cannot be captured; device kernels for them are future work, noted in
//! `docs/backends.md`.

use finetp_backend_cpu::on_host;
use finetp_core::backend::{BackendError, MoeRouting, Tensor, checks};

use crate::WgpuBackend;

pub(super) fn sample(be: &WgpuBackend, logits: &Tensor<WgpuBackend>, params: &Tensor<WgpuBackend>, ids: &mut Tensor<WgpuBackend>) -> Result<(), BackendError> {
    checks::sample(logits, params, ids)?;
    on_host::sample(be, be.cpu()?, logits, params, ids)
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
    on_host::moe_route(be, be.cpu()?, logits, bias, rule, ids, weights)
}
