//! aclnn's two-phase calls: tensor descriptors over device buffers, the workspace, and the
//! [`aclnn!`] macro that plans a call (`…GetWorkspaceSize`) and enqueues it with that workspace.

use std::ffi::c_void;

use ascend_sys::sys::{aclDataType, aclFormat, aclScalar, aclTensor};
use finetp_core::backend::{BackendError, DType, Tensor};

use crate::AscendBackend;
use crate::buffer::DevicePtr;

/// The ACL type of a tensor dtype (ids and other u32 tensors travel as int32: the same bits
/// below 2³¹, which every id, slot and position is).
pub(crate) fn acl_dtype(d: DType) -> Result<aclDataType, BackendError> {
    Ok(match d {
        DType::F32 => aclDataType::ACL_FLOAT,
        DType::F16 => aclDataType::ACL_FLOAT16,
        DType::BF16 => aclDataType::ACL_BF16,
        DType::U32 => aclDataType::ACL_INT32,
        other => return Err(BackendError::Unsupported(format!("aclnn has no {other} tensors in this backend"))),
    })
}

/// An `aclTensor` descriptor, destroyed on drop (after the call that used it was enqueued, as
/// aclnn allows).
pub(crate) struct Desc {
    pub ptr: *mut aclTensor,
    be: AscendBackend,
}

impl Drop for Desc {
    fn drop(&mut self) {
        // SAFETY: made by aclCreateTensor, destroyed once.
        unsafe { self.be.shared.acl.nnop.aclDestroyTensor(self.ptr) };
    }
}

impl AscendBackend {
    /// A view of `dims` with `strides` (elements) from element `offset` of `t`'s buffer.
    pub(crate) fn view(&self, t: &Tensor<Self>, dims: &[usize], strides: &[usize], offset: usize) -> Result<Desc, BackendError> {
        let dt = acl_dtype(t.dtype())?;
        let n = t.numel();
        self.view_as(t, dt, dims, strides, n)?.at(offset)
    }

    /// A view of `t`'s buffer as `storage` elements of ACL type `dt` (e.g. int64 results in a
    /// buffer allocated as twice as many u32), shaped `dims` with `strides`.
    pub(crate) fn view_as(&self, t: &Tensor<Self>, dt: aclDataType, dims: &[usize], strides: &[usize], storage: usize) -> Result<DescSpec, BackendError> {
        Ok(DescSpec { be: self.clone(), data: t.buffer().as_ptr(), dt, dims: dims.to_vec(), strides: strides.to_vec(), storage, dtype_name: t.dtype() })
    }

    /// `t` as `dims` (row-major, contiguous).
    pub(crate) fn desc_as(&self, t: &Tensor<Self>, dims: &[usize]) -> Result<Desc, BackendError> {
        let mut strides = vec![1usize; dims.len()];
        for i in (0..dims.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * dims[i + 1];
        }
        self.view(t, dims, &strides, 0)
    }

    /// `t` in its own shape.
    pub(crate) fn desc(&self, t: &Tensor<Self>) -> Result<Desc, BackendError> {
        self.desc_as(t, t.shape())
    }

    /// A host f32 scalar descriptor (alpha of an add).
    pub(crate) fn scalar(&self, v: f32) -> Result<Scalar, BackendError> {
        let mut v = v;
        // SAFETY: aclCreateScalar copies the value.
        let ptr = unsafe { self.shared.acl.nnop.aclCreateScalar((&mut v as *mut f32).cast(), aclDataType::ACL_FLOAT) };
        if ptr.is_null() {
            return Err(BackendError::device("aclCreateScalar", "returned null"));
        }
        Ok(Scalar { ptr, be: self.clone() })
    }

    /// The stream's workspace, grown to at least `bytes` (null for 0). Ops on one stream run in
    /// order, so one workspace serves all; a replaced one is retired like any dropped buffer
    /// (freed at the next sync point, or kept by the graph being captured).
    pub(crate) fn workspace(&self, bytes: u64) -> Result<*mut c_void, BackendError> {
        if bytes == 0 {
            return Ok(std::ptr::null_mut());
        }
        let mut st = self.shared.state();
        if let Some((p, have)) = st.workspace
            && have >= bytes
        {
            return Ok(p.0);
        }
        let size = bytes.next_power_of_two();
        let p = self.shared.acl.malloc(size as usize).map_err(|_| BackendError::OutOfMemory { bytes: size as usize })?;
        if let Some((old, _)) = st.workspace.replace((DevicePtr(p), size)) {
            st.retired.push(old);
        }
        Ok(p)
    }
}

/// A descriptor not made yet: [`DescSpec::at`] makes it at an element offset.
pub(crate) struct DescSpec {
    be: AscendBackend,
    data: *mut c_void,
    dt: aclDataType,
    dims: Vec<usize>,
    strides: Vec<usize>,
    storage: usize,
    dtype_name: DType,
}

impl DescSpec {
    /// The descriptor, its first element at `offset` (elements of its type).
    pub(crate) fn at(self, offset: usize) -> Result<Desc, BackendError> {
        let to_i64 = |v: &[usize]| v.iter().map(|&x| x as i64).collect::<Vec<i64>>();
        let (d, s) = (to_i64(&self.dims), to_i64(&self.strides));
        let storage = [self.storage as i64];
        // SAFETY: the arrays are read during the call; the data pointer is a tensor's buffer,
        // alive while the enqueued op runs (its Drop defers the free to the next sync point).
        let ptr = unsafe {
            self.be.shared.acl.nnop.aclCreateTensor(d.as_ptr(), d.len() as u64, self.dt, s.as_ptr(), offset as i64, aclFormat::ACL_FORMAT_ND, storage.as_ptr(), 1, self.data)
        };
        if ptr.is_null() {
            return Err(BackendError::device("aclCreateTensor", format!("returned null for {:?} {}", self.dims, self.dtype_name)));
        }
        Ok(Desc { ptr, be: self.be })
    }
}

/// An `aclScalar`, destroyed on drop.
pub(crate) struct Scalar {
    pub ptr: *mut aclScalar,
    be: AscendBackend,
}

impl Drop for Scalar {
    fn drop(&mut self) {
        // SAFETY: made by aclCreateScalar, destroyed once.
        unsafe { self.be.shared.acl.nnop.aclDestroyScalar(self.ptr) };
    }
}

/// Plans and enqueues one aclnn operator: `aclnn!(be, aclnnXxxGetWorkspaceSize, aclnnXxx,
/// (args…))` calls the first with `args…, &mut size, &mut executor`, takes a workspace of that
/// size and calls the second with it on the backend's stream.
macro_rules! aclnn {
    ($be:expr, $plan:ident, $run:ident, ($($arg:expr),* $(,)?)) => {{
        let be: &$crate::AscendBackend = $be;
        let acl = be.shared.acl;
        let lib = acl.op(stringify!($run), |a| a.$plan.is_ok() && a.$run.is_ok()).map_err($crate::runtime::device_err)?;
        let mut size: u64 = 0;
        let mut exec: *mut ascend_sys::sys::aclOpExecutor = std::ptr::null_mut();
        // SAFETY: descriptors and scalars made for this call, alive until it returns.
        let code = unsafe { lib.$plan($($arg,)* &mut size, &mut exec) };
        acl.check(stringify!($plan), code).map_err($crate::runtime::device_err)?;
        let ws = be.workspace(size)?;
        be.enqueued();
        // SAFETY: the executor just planned, a workspace of at least `size` bytes, this stream.
        let code = unsafe { lib.$run(ws, size, exec, be.stream()) };
        acl.check(stringify!($run), code).map_err($crate::runtime::device_err)
    }};
}
pub(crate) use aclnn;

