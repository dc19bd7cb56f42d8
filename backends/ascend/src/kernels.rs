//! The decoder [`Kernels`] on the NPU.
//!
//! On the device (aclnn): RMSNorm (`aclnnRmsNorm`), SiLU·mul (`aclnnSwiGlu`), add
//! (`aclnnInplaceAdd`), the vocab-parallel embedding (`aclnnEmbedding` of ids localised on the
//! host, times the in-shard mask), greedy sampling (`aclnnArgMax`), and attention's matmuls and
//! softmax (`attention.rs`). The KV-cache write moves rows device to device at places worked
//! out on the host from the step's (small) index tensors. RoPE, sampling with a temperature and
//! MoE routing run on the host with the CPU reference's code (`host.rs`). Every op that reads
//! an index tensor on the host is a sync point and is refused during a capture.

use finetp_core::backend::{AttentionParams, Backend, BackendError, DType, HostTensor, Kernels, KvIndex, MoeRouting, RopeTable, Tensor, checks};

use crate::AscendBackend;
use crate::aclnn::aclnn;
use finetp_backend_cpu::on_host;

use crate::host::u32s;


impl Kernels for AscendBackend {
    fn embedding(&self, ids: &Tensor<Self>, table: &Tensor<Self>, row_start: usize, y: &mut Tensor<Self>) -> Result<(), BackendError> {
        let (vs, h, t) = checks::embedding(ids, table, y)?;
        if t == 0 || h == 0 {
            return Ok(());
        }
        self.no_host_during_capture("embedding (ids are localised on the host)")?;
        // This shard's rows: ids outside it read row 0 and are zeroed by the mask.
        let (local, mask): (Vec<u32>, Vec<f32>) = u32s(self, ids)?
            .iter()
            .map(|&id| match (id as usize).checked_sub(row_start) {
                Some(r) if r < vs => (r as u32, 1.0),
                _ => (0, 0.0),
            })
            .unzip();
        let local = self.upload(&HostTensor::u32(local, &[t])?)?;
        let mask = self.upload(&HostTensor::f32(mask, &[t, 1])?)?;
        let mut wide = None;
        let table = self.as_f32(table, &mut wide)?;
        let (w, i, o) = (self.desc(table)?, self.desc(&local)?, self.desc(y)?);
        aclnn!(self, aclnnEmbeddingGetWorkspaceSize, aclnnEmbedding, (w.ptr, i.ptr, o.ptr))?;
        let m = self.desc(&mask)?;
        aclnn!(self, aclnnInplaceMulGetWorkspaceSize, aclnnInplaceMul, (o.ptr, m.ptr))
    }

    fn rms_norm(&self, x: &Tensor<Self>, w: &Tensor<Self>, eps: f32, y: &mut Tensor<Self>) -> Result<(), BackendError> {
        let h = w.numel();
        if h == 0 || !x.numel().is_multiple_of(h) || x.shape() != y.shape() {
            return Err(BackendError::Shape(format!("rms_norm: x {:?}, w {:?}, y {:?}", x.shape(), w.shape(), y.shape())));
        }
        checks::f32_activation(x, "rms_norm x")?;
        let rows = x.numel() / h;
        if rows == 0 {
            return Ok(());
        }
        let rstd = self.empty(&[rows, 1], DType::F32)?;
        let mut wide = None;
        let w = self.as_f32(w, &mut wide)?;
        let (xd, wd, yd, rd) = (self.desc_as(x, &[rows, h])?, self.desc_as(w, &[h])?, self.desc_as(y, &[rows, h])?, self.desc(&rstd)?);
        aclnn!(self, aclnnRmsNormGetWorkspaceSize, aclnnRmsNorm, (xd.ptr, wd.ptr, f64::from(eps), yd.ptr, rd.ptr))
    }

    fn rope(&self, x: &mut Tensor<Self>, positions: &Tensor<Self>, table: &RopeTable<Self>) -> Result<(), BackendError> {
        self.no_host_during_capture("rope (on the host)")?;
        on_host::rope(self, self.cpu()?, x, positions, table)
    }

    fn silu_mul(&self, gate_up: &Tensor<Self>, y: &mut Tensor<Self>) -> Result<(), BackendError> {
        let [t, two_i] = *gate_up.shape() else {
            return Err(BackendError::Shape(format!("silu_mul: gate_up must be [T, 2I], got {:?}", gate_up.shape())));
        };
        if !two_i.is_multiple_of(2) || y.shape() != [t, two_i / 2] {
            return Err(BackendError::Shape(format!("silu_mul: gate_up {:?} into y {:?}", gate_up.shape(), y.shape())));
        }
        checks::f32_activation(gate_up, "silu_mul")?;
        if t == 0 || two_i == 0 {
            return Ok(());
        }
        let (g, o) = (self.desc(gate_up)?, self.desc(y)?);
        aclnn!(self, aclnnSwiGluGetWorkspaceSize, aclnnSwiGlu, (g.ptr, -1i64, o.ptr))
    }

    fn add_assign(&self, a: &mut Tensor<Self>, b: &Tensor<Self>) -> Result<(), BackendError> {
        if a.shape() != b.shape() {
            return Err(BackendError::Shape(format!("add_assign: {:?} += {:?}", a.shape(), b.shape())));
        }
        checks::f32_activation(a, "add_assign")?;
        if a.numel() == 0 {
            return Ok(());
        }
        let (ad, bd) = (self.desc(a)?, self.desc(b)?);
        self.add_into(&ad, &bd)
    }

    fn kv_cache_write(&self, x: &Tensor<Self>, cache: &mut Tensor<Self>, index: &KvIndex<'_, Self>) -> Result<(), BackendError> {
        let d = checks::kv_cache_write(x, cache, index)?;
        if x.rows() == 0 {
            return Ok(());
        }
        self.no_host_during_capture("kv_cache_write (places are worked out on the host)")?;
        let places = crate::attention::places(&crate::attention::HostIndex::read(self, index)?, &d, x.rows())?;
        let row = d.heads * d.dim;
        for (t, place) in places.iter().enumerate() {
            if let Some((block, at)) = *place {
                self.copy_block(x, cache, finetp_core::backend::Block::at((t, 0), (block, at * row), 1, row))?;
            }
        }
        Ok(())
    }

    fn kv_cache_attention(&self, q: &Tensor<Self>, k_cache: &Tensor<Self>, v_cache: &Tensor<Self>, index: &KvIndex<'_, Self>, params: &AttentionParams, y: &mut Tensor<Self>) -> Result<(), BackendError> {
        crate::attention::attention(self, q, k_cache, v_cache, index, params, y)
    }

    fn sample(&self, logits: &Tensor<Self>, params: &Tensor<Self>, ids: &mut Tensor<Self>) -> Result<(), BackendError> {
        let (m, _) = checks::sample(logits, params, ids)?;
        if m == 0 {
            return Ok(());
        }
        self.no_host_during_capture("sample (reads its parameters on the host)")?;
        let p = on_host::to_cpu(self, params)?;
        let greedy = p.buffer().as_f32("sample")?.chunks(4).all(|r| r[0] <= 0.0);
        if greedy && logits.dtype() == DType::F32 {
            // aclnnArgMax gives int64 (8 bytes a row, here in a u32 [m, 2] buffer); its cast to
            // int32 is the u32 ids.
            let wide = self.empty(&[m, 2], DType::U32)?;
            let (l, w) = (self.desc(logits)?, self.view_as(&wide, ascend_sys::sys::aclDataType::ACL_INT64, &[m], &[1], m)?.at(0)?);
            aclnn!(self, aclnnArgMaxGetWorkspaceSize, aclnnArgMax, (l.ptr, 1i64, false, w.ptr))?;
            let o = self.desc_as(ids, &[m])?;
            return aclnn!(self, aclnnCastGetWorkspaceSize, aclnnCast, (w.ptr, ascend_sys::sys::aclDataType::ACL_INT32, o.ptr));
        }
        on_host::sample(self, self.cpu()?, logits, params, ids)
    }

    fn moe_route(&self, router_logits: &Tensor<Self>, bias: Option<&Tensor<Self>>, rule: &MoeRouting, ids: &mut Tensor<Self>, weights: &mut Tensor<Self>) -> Result<(), BackendError> {
        checks::moe_route(router_logits, bias, rule, ids, weights)?;
        self.no_host_during_capture("moe_route (on the host)")?;
        on_host::moe_route(self, self.cpu()?, router_logits, bias, rule, ids, weights)
    }
}
