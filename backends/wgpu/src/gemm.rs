//! [`Gemm`] on wgpu: `y = x · wᵀ (+ bias)` with f32, bf16 or f16 weights, f32 accumulation.
//!
//! One invocation per weight row and `C` activation rows (see `shaders/linear.wgsl`): decode
//! (`m = 1`) streams each weight row once through one invocation; for larger `m` each
//! invocation reuses its weight row for `C` activation rows. No workgroup memory, no
//! barriers. A weight bigger than one storage binding is read through row windows, one
//! launch per window (the kernel also takes a batch of products over flattened `[B·n, k]`
//! weight rows, row `r` being output `r % n` of batch `r / n`; the contract's `linear` uses one).

use finetp_core::backend::{BackendError, DType, Gemm, Tensor};

use crate::WgpuBackend;
use crate::buffer::{whole, window_binding, windows};
use crate::dispatch::Params;
use crate::shaders::{self, Stored};

/// Activation rows per invocation for `m` rows: 1 keeps decode lean in registers; 4 reads
/// each weight element once per 4 rows for prefill (more accumulators than that spill).
fn rows_per_invocation(m: usize) -> usize {
    m.clamp(1, 4)
}

fn dims<const N: usize>(t: &Tensor<WgpuBackend>, op: &str, what: &str) -> Result<[usize; N], BackendError> {
    t.shape().try_into().map_err(|_| BackendError::Shape(format!("{op}: {what} must be {N}-D, got {:?}", t.shape())))
}

fn f32_only(t: &Tensor<WgpuBackend>, op: &'static str) -> Result<(), BackendError> {
    match t.dtype() {
        DType::F32 => Ok(()),
        got => Err(BackendError::DType { op, expected: "f32", got }),
    }
}

/// One GEMM call's operands, checked.
struct Call<'a> {
    x: &'a Tensor<WgpuBackend>,
    w: &'a Tensor<WgpuBackend>,
    bias: Option<&'a Tensor<WgpuBackend>>,
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
}

impl WgpuBackend {
    fn matmul(&self, c: Call<'_>, y: &mut Tensor<WgpuBackend>, op: &'static str) -> Result<(), BackendError> {
        let caps = *self.caps();
        let stored = Stored::of(c.w.dtype(), &caps, op)?;
        if c.batch == 0 || c.m == 0 || c.n == 0 {
            return Ok(());
        }
        let cr = rows_per_invocation(c.m);
        // Vector loads need every row to start on a vector: k a multiple of 4 (windows start
        // on 256-byte boundaries, so their element offsets are then multiples of 4 too).
        let vec4 = c.k.is_multiple_of(4);
        let key = format!("linear_{}_{cr}_{}", stored.tag(), if vec4 { "v4" } else { "s" });
        let k = self.kernel(&key, || shaders::build_with(&shaders::linear_body(cr, vec4, stored == Stored::BF16), &caps, &[("w", 2, stored)], vec4))?;
        let wb = c.w.buffer();
        let wins = if c.k == 0 {
            vec![crate::buffer::Window { offset: 0, size: wb.buf.size().min(caps.max_binding), first_row: 0, rows: c.batch * c.n, elem_off: 0 }]
        } else {
            windows(c.batch * c.n, c.k, c.w.dtype(), wb.buf.size(), &caps)?
        };
        let xb = whole(c.x.buffer(), &caps, op)?;
        let bias = match c.bias {
            Some(b) => whole(b.buffer(), &caps, op)?,
            None => self.inner.dummy.as_entire_binding(),
        };
        let yb = whole(y.buffer(), &caps, op)?;
        let m_groups = c.m.div_ceil(cr);
        for win in &wins {
            let p = Params::new().u(c.m)?.u(c.k)?.u(c.n)?.u(win.first_row)?.u(win.rows)?.u(win.elem_off as usize)?.u(usize::from(c.bias.is_some()))?;
            let grid = [win.rows.div_ceil(caps.wg as usize), m_groups, 1];
            let grid = grid.map(|g| u32::try_from(g).unwrap_or(u32::MAX));
            let args = [xb.clone(), window_binding(wb, win), bias.clone(), yb.clone()];
            self.launch(&k, p, &args, grid)?;
        }
        Ok(())
    }
}

impl Gemm for WgpuBackend {
    fn linear(&self, x: &Tensor<Self>, w: &Tensor<Self>, bias: Option<&Tensor<Self>>, y: &mut Tensor<Self>) -> Result<(), BackendError> {
        let [m, k] = dims(x, "linear", "x")?;
        let [n, kw] = dims(w, "linear", "w")?;
        if kw != k || y.shape() != [m, n] {
            return Err(BackendError::Shape(format!("linear: x {:?} · w {:?}ᵀ does not fit y {:?}", x.shape(), w.shape(), y.shape())));
        }
        f32_only(x, "linear (x)")?;
        f32_only(y, "linear (y)")?;
        if let Some(b) = bias {
            if b.numel() != n || b.shape().len() > 2 {
                return Err(BackendError::Shape(format!("linear: bias {:?} for {n} outputs", b.shape())));
            }
            f32_only(b, "linear (bias)")?;
        }
        self.matmul(Call { x, w, bias, batch: 1, m, n, k }, y, "linear")
    }
}
