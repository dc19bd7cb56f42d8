//! The decoder kernels on wgpu. Each call checks shapes and dtypes on the host (they are
//! host values), then enqueues one or a few launches; nothing waits except `sample` and
//! `moe_route`, which run on the host for now (`sampling.rs`).

mod attention;
mod rows;
mod sampling;

use finetp_core::backend::{AttentionParams, BackendError, DType, Kernels, KvIndex, MoeRouting, RopeTable, Tensor};

use crate::WgpuBackend;

fn want(t: &Tensor<WgpuBackend>, dtype: DType, op: &'static str) -> Result<(), BackendError> {
    if t.dtype() != dtype {
        return Err(BackendError::DType { op, expected: dtype.name(), got: t.dtype() });
    }
    Ok(())
}

fn same_shape(op: &str, a: &[usize], b: &[usize]) -> Result<(), BackendError> {
    if a != b {
        return Err(BackendError::Shape(format!("{op}: shapes {a:?} and {b:?} differ")));
    }
    Ok(())
}

/// `[T, V]` of a tensor that must be 2-D.
fn rows_cols(t: &Tensor<WgpuBackend>, op: &str) -> Result<(usize, usize), BackendError> {
    match t.shape() {
        [a, b] => Ok((*a, *b)),
        s => Err(BackendError::Shape(format!("{op}: expected a 2-D tensor, got {s:?}"))),
    }
}

impl Kernels for WgpuBackend {
    fn embedding(&self, ids: &Tensor<Self>, table: &Tensor<Self>, row_start: usize, y: &mut Tensor<Self>) -> Result<(), BackendError> {
        rows::embedding(self, ids, table, row_start, y)
    }

    fn rms_norm(&self, x: &Tensor<Self>, w: &Tensor<Self>, eps: f32, y: &mut Tensor<Self>) -> Result<(), BackendError> {
        rows::rms_norm(self, x, w, eps, y)
    }

    fn rope(&self, x: &mut Tensor<Self>, positions: &Tensor<Self>, table: &RopeTable<Self>) -> Result<(), BackendError> {
        rows::rope(self, x, positions, table)
    }

    fn silu_mul(&self, gate_up: &Tensor<Self>, y: &mut Tensor<Self>) -> Result<(), BackendError> {
        rows::silu_mul(self, gate_up, y)
    }

    fn add_assign(&self, a: &mut Tensor<Self>, b: &Tensor<Self>) -> Result<(), BackendError> {
        rows::add_assign(self, a, b)
    }

    fn kv_cache_write(&self, x: &Tensor<Self>, cache: &mut Tensor<Self>, index: &KvIndex<'_, Self>) -> Result<(), BackendError> {
        attention::kv_cache_write(self, x, cache, index)
    }

    fn kv_cache_attention(
        &self,
        q: &Tensor<Self>,
        k_cache: &Tensor<Self>,
        v_cache: &Tensor<Self>,
        index: &KvIndex<'_, Self>,
        params: &AttentionParams,
        y: &mut Tensor<Self>,
    ) -> Result<(), BackendError> {
        attention::kv_cache_attention(self, (q, k_cache, v_cache), index, params, y)
    }

    fn sample(&self, logits: &Tensor<Self>, params: &Tensor<Self>, ids: &mut Tensor<Self>) -> Result<(), BackendError> {
        sampling::sample(self, logits, params, ids)
    }

    fn moe_route(&self, router_logits: &Tensor<Self>, bias: Option<&Tensor<Self>>, rule: &MoeRouting, ids: &mut Tensor<Self>, weights: &mut Tensor<Self>) -> Result<(), BackendError> {
        sampling::moe_route(self, router_logits, bias, rule, ids, weights)
    }
}
