//! Decoder kernels for the CPU backend. Plain loops that the compiler vectorises, parallel over
//! rows or heads where the work is large enough to pay for the pool hand-off (attention, norms
//! and element-wise ops of long prefills).
//!
//! Every kernel checks shapes and dtypes first and answers a [`BackendError`] instead of
//! panicking; nothing is precomputed or cached between calls, so a recorded call replays
//! exactly (see [`crate::graph`]).

mod attention;
mod flash;
mod routing;
mod rows;
pub(crate) mod sampling;

use finetp_core::backend::{AttentionParams, BackendError, DType, Kernels, KvIndex, MoeRouting, RopeTable, Tensor};
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
        // Whole blocks only: an embedding row of a block-format table starts and ends on one.
        CpuStorage::Blocks { dtype, bytes } => {
            let (be, bb) = (dtype.block_elems(), dtype.block_bytes());
            if !start.is_multiple_of(be) || !dst.len().is_multiple_of(be) {
                return Err(BackendError::Shape(format!("{op}: {} {dtype} elements from {start} cut a block", dst.len())));
            }
            finetp_core::backend::quant::decode(*dtype, &bytes[start / be * bb..(start + dst.len()) / be * bb], dst)?;
        }
    }
    Ok(())
}

/// The three index tensors of a KV-cache call, in the order `launch` passes them.
fn index_of<'a>(t: &[&'a Tensor<CpuBackend>]) -> KvIndex<'a, CpuBackend> {
    KvIndex { block_table: t[0], slots: t[1], positions: t[2] }
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

// Every kernel goes through `launch`, so that a captured step records it (see `graph`). The
// closures index `i`/`o` in the order the tensors were passed.
impl Kernels for CpuBackend {
    fn embedding(&self, ids: &Tensor<Self>, table: &Tensor<Self>, row_start: usize, y: &mut Tensor<Self>) -> Result<(), BackendError> {
        self.launch("embedding", &[ids, table], &mut [y], move |be, i, o| rows::embedding(be, i[0], i[1], row_start, o[0]))
    }

    fn rms_norm(&self, x: &Tensor<Self>, w: &Tensor<Self>, eps: f32, y: &mut Tensor<Self>) -> Result<(), BackendError> {
        self.launch("rms_norm", &[x, w], &mut [y], move |be, i, o| rows::rms_norm(be, i[0], i[1], eps, o[0]))
    }

    fn rope(&self, x: &mut Tensor<Self>, positions: &Tensor<Self>, table: &RopeTable<Self>) -> Result<(), BackendError> {
        let how = (table.style, table.attention_factor);
        self.launch("rope", &[positions, &table.inv_freq], &mut [x], move |be, i, o| rows::rope(be, o[0], i[0], i[1], how))
    }

    fn silu_mul(&self, gate_up: &Tensor<Self>, y: &mut Tensor<Self>) -> Result<(), BackendError> {
        self.launch("silu_mul", &[gate_up], &mut [y], |be, i, o| rows::silu_mul(be, i[0], o[0]))
    }

    fn add_assign(&self, a: &mut Tensor<Self>, b: &Tensor<Self>) -> Result<(), BackendError> {
        self.launch("add_assign", &[b], &mut [a], |be, i, o| rows::add_assign(be, o[0], i[0]))
    }

    fn kv_cache_write(&self, x: &Tensor<Self>, cache: &mut Tensor<Self>, index: &KvIndex<'_, Self>) -> Result<(), BackendError> {
        let ins = [index.block_table, index.slots, index.positions, x];
        self.launch("kv_cache_write", &ins, &mut [cache], |_, i, o| attention::kv_cache_write(i[3], o[0], &index_of(i)))
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
        let (ins, params) = ([index.block_table, index.slots, index.positions, q, k_cache, v_cache], *params);
        self.launch("kv_cache_attention", &ins, &mut [y], move |be, i, o| attention::kv_cache_attention(be, (i[3], i[4], i[5]), &index_of(i), &params, o[0]))
    }

    fn sample(&self, logits: &Tensor<Self>, params: &Tensor<Self>, ids: &mut Tensor<Self>) -> Result<(), BackendError> {
        self.launch("sample", &[logits, params], &mut [ids], |_, i, o| sampling::sample(i[0], i[1], o[0]))
    }

    fn moe_route(&self, router_logits: &Tensor<Self>, bias: Option<&Tensor<Self>>, rule: &MoeRouting, ids: &mut Tensor<Self>, weights: &mut Tensor<Self>) -> Result<(), BackendError> {
        let rule = *rule;
        match bias {
            Some(b) => self.launch("moe_route", &[router_logits, b], &mut [ids, weights], move |_, i, o| {
                let [ids, w] = o else { unreachable!("two outputs") };
                routing::moe_route(i[0], Some(i[1]), &rule, ids, w)
            }),
            None => self.launch("moe_route", &[router_logits], &mut [ids, weights], move |_, i, o| {
                let [ids, w] = o else { unreachable!("two outputs") };
                routing::moe_route(i[0], None, &rule, ids, w)
            }),
        }
    }
}
