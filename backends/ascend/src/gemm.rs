//! [`Gemm`] on aclnn: `y = x · wᵀ (+ bias)` as `aclnnMatmul` over a transposed view of the
//! HF `[out, in]` weight (strides `[1, k]`, no copy), f32 throughout (`cubeMathType` 0 keeps
//! f32; HF32 would be 1). bf16/f16 weights are widened to a temporary f32 copy per call until
//! activations can be 16-bit (noted in docs/backends.md).

use finetp_core::backend::{Backend, BackendError, DType, Gemm, Tensor, checks};

use crate::AscendBackend;
use crate::aclnn::aclnn;

impl AscendBackend {
    /// `t` as f32: itself, or a widened temporary (`aclnnCast`).
    pub(crate) fn as_f32<'a>(&self, t: &'a Tensor<Self>, tmp: &'a mut Option<Tensor<Self>>) -> Result<&'a Tensor<Self>, BackendError> {
        match t.dtype() {
            DType::F32 => Ok(t),
            DType::F16 | DType::BF16 => {
                let out = tmp.insert(self.empty(t.shape(), DType::F32)?);
                let (s, o) = (self.desc(t)?, self.desc(out)?);
                aclnn!(self, aclnnCastGetWorkspaceSize, aclnnCast, (s.ptr, ascend_sys::sys::aclDataType::ACL_FLOAT, o.ptr))?;
                Ok(out)
            }
            got => Err(BackendError::DType { op: "ascend", expected: "a float", got }),
        }
    }

    /// `a += b` (b broadcast to a's shape by numpy rules), both viewed as given.
    pub(crate) fn add_into(&self, a: &crate::aclnn::Desc, b: &crate::aclnn::Desc) -> Result<(), BackendError> {
        let one = self.scalar(1.0)?;
        aclnn!(self, aclnnInplaceAddGetWorkspaceSize, aclnnInplaceAdd, (a.ptr, b.ptr, one.ptr))
    }
}

impl Gemm for AscendBackend {
    fn linear(&self, x: &Tensor<Self>, w: &Tensor<Self>, bias: Option<&Tensor<Self>>, y: &mut Tensor<Self>) -> Result<(), BackendError> {
        let (m, n, k) = checks::linear(x, w, bias, y)?;
        if m == 0 || n == 0 {
            return Ok(());
        }
        if k == 0 {
            let z = self.zeros(y.shape(), DType::F32)?;
            self.copy_block(&z, y, finetp_core::backend::Block::whole(&z))?;
        } else {
            let mut wide = None;
            let w = self.as_f32(w, &mut wide)?;
            let (xd, wt, yd) = (self.desc(x)?, self.view(w, &[k, n], &[1, k], 0)?, self.desc(y)?);
            aclnn!(self, aclnnMatmulGetWorkspaceSize, aclnnMatmul, (xd.ptr, wt.ptr, yd.ptr, 0i8))?;
        }
        if let Some(b) = bias {
            let (yd, bd) = (self.desc(y)?, self.desc_as(b, &[n])?);
            self.add_into(&yd, &bd)?;
        }
        Ok(())
    }
}
