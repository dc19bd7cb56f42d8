//! Decoder kernels for the CPU backend. Plain loops that the compiler vectorises, parallel over
//! rows or heads where the work is large enough to pay for the pool hand-off (attention, norms
//! and element-wise ops of long prefills).
//!
//! Every kernel checks shapes and dtypes first and answers a [`BackendError`] instead of
//! panicking; nothing is precomputed or cached between calls.

mod attention;
mod rows;
mod sampling;

use finetp_core::backend::{BackendError, DType, Kernels, RopeStyle, Tensor};
use half::slice::HalfFloatSliceExt;

use crate::storage::{CpuBackend, CpuStorage};

/// Elements below which a kernel stays on the calling thread.
const PARALLEL_MIN: usize = 1 << 16;

/// Writes elements `start..start + dst.len()` of any float storage into `dst` as f32.
fn widen_into(s: &CpuStorage, op: &'static str, start: usize, dst: &mut [f32]) -> Result<(), BackendError> {
    let r = start..start + dst.len();
    match s {
        CpuStorage::F32(v) => dst.copy_from_slice(&v[r]),
        CpuStorage::BF16(v) => v[r].convert_to_f32_slice(dst),
        CpuStorage::F16(v) => v[r].convert_to_f32_slice(dst),
        CpuStorage::U32(_) => return Err(float_expected(op)),
    }
    Ok(())
}

fn float_expected(op: &'static str) -> BackendError {
    BackendError::DType { op, expected: "a float dtype", got: DType::U32 }
}

fn same_shape(op: &str, a: &[usize], b: &[usize]) -> Result<(), BackendError> {
    if a != b {
        return Err(BackendError::Shape(format!("{op}: shapes {a:?} and {b:?} differ")));
    }
    Ok(())
}

/// `[T, V]` of a tensor that must be 2-D.
fn rows_cols(t: &Tensor<CpuBackend>, op: &str) -> Result<(usize, usize), BackendError> {
    match t.shape() {
        [a, b] => Ok((*a, *b)),
        s => Err(BackendError::Shape(format!("{op}: expected a 2-D tensor, got {s:?}"))),
    }
}

impl Kernels for CpuBackend {
    fn embedding(&self, ids: &Tensor<Self>, table: &Tensor<Self>, row_start: usize, y: &mut Tensor<Self>) -> Result<(), BackendError> {
        rows::embedding(self, ids, table, row_start, y)
    }

    fn rms_norm(&self, x: &Tensor<Self>, w: &Tensor<Self>, eps: f32, y: &mut Tensor<Self>) -> Result<(), BackendError> {
        rows::rms_norm(self, x, w, eps, y)
    }

    fn rope(&self, x: &mut Tensor<Self>, positions: &[u32], inv_freq: &[f32], style: RopeStyle) -> Result<(), BackendError> {
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

    fn attention(&self, q: &Tensor<Self>, k: &Tensor<Self>, v: &Tensor<Self>, past: usize, scale: f32, y: &mut Tensor<Self>) -> Result<(), BackendError> {
        attention::attention(self, q, k, v, past, scale, y)
    }

    fn argmax(&self, logits: &Tensor<Self>) -> Result<Vec<u32>, BackendError> {
        sampling::argmax(logits)
    }

    fn top_k(&self, logits: &Tensor<Self>, k: usize) -> Result<Vec<Vec<(f32, u32)>>, BackendError> {
        sampling::top_k(logits, k)
    }
}
