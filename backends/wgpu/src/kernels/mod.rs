//! The decoder kernels on wgpu. Each call checks shapes and dtypes on the host (they are
//! host values), then enqueues one or a few launches; nothing waits except `argmax` and
//! `top_k`, which return host values.

mod attention;
mod rows;
mod sampling;

use finetp_core::backend::{BackendError, DType, Kernels, RopeStyle, Tensor};

use crate::WgpuBackend;

fn want(t: &Tensor<WgpuBackend>, dtype: DType, op: &'static str) -> Result<(), BackendError> {
    if t.dtype() != dtype {
        let expected = match dtype {
            DType::F32 => "f32",
            DType::U32 => "u32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        };
        return Err(BackendError::DType { op, expected, got: t.dtype() });
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

    fn rope(&self, x: &mut Tensor<Self>, positions: &Tensor<Self>, inv_freq: &Tensor<Self>, style: RopeStyle) -> Result<(), BackendError> {
        rows::rope(self, x, positions, inv_freq, style)
    }

    fn silu_mul(&self, gate_up: &Tensor<Self>, y: &mut Tensor<Self>) -> Result<(), BackendError> {
        rows::silu_mul(self, gate_up, y)
    }

    fn add_assign(&self, a: &mut Tensor<Self>, b: &Tensor<Self>) -> Result<(), BackendError> {
        rows::add_assign(self, a, b)
    }

    fn scale(&self, a: &mut Tensor<Self>, s: f32) -> Result<(), BackendError> {
        rows::scale(self, a, s)
    }

    fn kv_cache_write(&self, x: &Tensor<Self>, cache: &mut Tensor<Self>, slots: &Tensor<Self>, positions: &Tensor<Self>) -> Result<(), BackendError> {
        attention::kv_cache_write(self, x, cache, slots, positions)
    }

    fn kv_cache_attention(
        &self,
        q: &Tensor<Self>,
        k_cache: &Tensor<Self>,
        v_cache: &Tensor<Self>,
        slots: &Tensor<Self>,
        positions: &Tensor<Self>,
        scale: f32,
        y: &mut Tensor<Self>,
    ) -> Result<(), BackendError> {
        attention::kv_cache_attention(self, q, k_cache, v_cache, slots, positions, scale, y)
    }

    fn argmax(&self, logits: &Tensor<Self>) -> Result<Vec<u32>, BackendError> {
        sampling::argmax(self, logits)
    }

    fn top_k(&self, logits: &Tensor<Self>, k: usize) -> Result<Vec<Vec<(f32, u32)>>, BackendError> {
        sampling::top_k(self, logits, k)
    }
}
