//! Reading a step's small index tensors on the host (slots, positions, block tables, ids): the
//! ops that work out places or masks from them (`kernels.rs`, `attention.rs`). The ops that run
//! wholly on the host use the CPU reference through `finetp_backend_cpu::on_host`.

use finetp_core::backend::{Backend, BackendError, HostData, Tensor};

use crate::AscendBackend;

/// A u32 device tensor's values.
pub(crate) fn u32s(be: &AscendBackend, t: &Tensor<AscendBackend>) -> Result<Vec<u32>, BackendError> {
    match be.download(t)?.data {
        HostData::U32(v) => Ok(v),
        other => Err(BackendError::DType { op: "index", expected: "u32", got: other.dtype() }),
    }
}
