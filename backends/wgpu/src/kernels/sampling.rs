//! Greedy and top-k selection: argmax reduces on the device and reads back one index per
//! row; top-k reads the logits back and reuses the CPU backend's selection (host-side
//! sampling, the same order and tie rules).

use finetp_backend_cpu::CpuStorage;
use finetp_core::backend::{Backend, BackendError, DType, HostData, Kernels, Tensor};

use super::{rows_cols, want};
use crate::WgpuBackend;
use crate::buffer::whole;
use crate::dispatch::Params;
use crate::shaders;

/// Logits per stage-1 invocation.
const CHUNK: usize = 1024;

fn shape_ok(logits: &Tensor<WgpuBackend>, op: &'static str) -> Result<(usize, usize), BackendError> {
    let (t, v) = rows_cols(logits, op)?;
    want(logits, DType::F32, op)?;
    if v == 0 && t > 0 {
        return Err(BackendError::Shape(format!("{op}: rows of zero logits {:?}", logits.shape())));
    }
    Ok((t, v))
}

pub(super) fn argmax(be: &WgpuBackend, logits: &Tensor<WgpuBackend>) -> Result<Vec<u32>, BackendError> {
    let (t, v) = shape_ok(logits, "argmax")?;
    if t == 0 {
        return Ok(Vec::new());
    }
    let caps = *be.caps();
    let chunks = v.div_ceil(CHUNK);
    let part = be.alloc((t * chunks * 8) as u64)?;
    let out = be.alloc((t * 4) as u64)?;
    let k1 = be.kernel("argmax", || shaders::build(shaders::ARGMAX, &caps, &[]))?;
    let k2 = be.kernel("argmax_rows", || shaders::build(shaders::ARGMAX_ROWS, &caps, &[]))?;
    let p1 = Params::new().u(t)?.u(v)?.u(CHUNK)?.u(chunks)?;
    be.launch(&k1, p1, &[whole(logits.buffer(), &caps, "argmax")?, whole(&part, &caps, "argmax")?], be.grid(t * chunks)?)?;
    be.launch(&k2, Params::new().u(t)?.u(chunks)?, &[whole(&part, &caps, "argmax")?, whole(&out, &caps, "argmax")?], be.grid(t)?)?;
    Ok(be.read_checked(&[(&out.buf, out.len)])?.pop().unwrap_or_default())
}

pub(super) fn top_k(be: &WgpuBackend, logits: &Tensor<WgpuBackend>, k: usize) -> Result<Vec<Vec<(f32, u32)>>, BackendError> {
    shape_ok(logits, "top_k")?;
    let host = be.download(logits)?;
    let HostData::F32(v) = host.data else {
        return Err(BackendError::DType { op: "top_k", expected: "f32", got: host.data.dtype() });
    };
    let cpu = Tensor::from_parts(CpuStorage::F32(v), host.shape, DType::F32);
    be.cpu()?.top_k(&cpu, k)
}
