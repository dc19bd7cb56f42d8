//! The [`Gemm`] contract on the CPU: each call runs at once (`crate::gemm`) and, while a graph
//! is being captured, is recorded to run again at replay (`crate::graph`).

use finetp_core::backend::{BackendError, Gemm, Tensor};

use crate::storage::CpuBackend;

impl Gemm for CpuBackend {
    fn linear(&self, x: &Tensor<Self>, w: &Tensor<Self>, bias: Option<&Tensor<Self>>, y: &mut Tensor<Self>) -> Result<(), BackendError> {
        match bias {
            Some(b) => self.launch("linear", &[x, w, b], &mut [y], |be, i, o| be.linear_now(i[0], i[1], Some(i[2]), o[0])),
            None => self.launch("linear", &[x, w], &mut [y], |be, i, o| be.linear_now(i[0], i[1], None, o[0])),
        }
    }
}
