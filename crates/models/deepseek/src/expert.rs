//! One SwiGLU expert of a mixture-of-experts layer (routed or shared).

use finetp_core::backend::{Block, Device, Tensor};
use finetp_core::decoder::ModelError;
use finetp_core::layers::linear;
use finetp_core::shard::{Axis, ShardSpec, WeightSource};

/// One SwiGLU expert (this TP rank's block of it).
pub(crate) struct Expert<B: Device> {
    gate: Tensor<B>,
    up: Tensor<B>,
    down: Tensor<B>,
}

impl<B: Device> Expert<B> {
    /// TP rank `j` of `t`'s block of the intermediate (vLLM's TP MoE without expert
    /// parallelism): gate/up rows, down columns; its output is `Partial` over TP.
    pub(crate) fn load(be: &B, src: &dyn WeightSource, prefix: &str, h: usize, i: usize, (j, t): (usize, usize)) -> Result<Self, ModelError> {
        let part = |name: String, shape: &[usize], axis: Axis| -> Result<Tensor<B>, ModelError> {
            src.expect_shape(&name, shape)?;
            Ok(be.upload(&src.load(&name, &ShardSpec::even(axis, i, j, t))?)?)
        };
        Ok(Self {
            gate: part(format!("{prefix}.gate_proj.weight"), &[i, h], Axis::Rows)?,
            up: part(format!("{prefix}.up_proj.weight"), &[i, h], Axis::Rows)?,
            down: part(format!("{prefix}.down_proj.weight"), &[h, i], Axis::Cols)?,
        })
    }

    pub(crate) fn forward(&self, be: &B, x: &Tensor<B>) -> Result<Tensor<B>, ModelError> {
        let (g, u) = (linear(be, x, &self.gate, None)?, linear(be, x, &self.up, None)?);
        let i = g.row_len();
        let mut gu = be.zeros(&[x.rows(), 2 * i], g.dtype())?;
        be.copy_block(&g, &mut gu, Block::rows(0, 0, x.rows(), i))?;
        be.copy_block(&u, &mut gu, Block::at((0, 0), (0, i), x.rows(), i))?;
        let mut a = be.zeros(&[x.rows(), i], g.dtype())?;
        be.silu_mul(&gu, &mut a)?;
        Ok(linear(be, &a, &self.down, None)?)
    }

    pub(crate) fn bytes(&self) -> usize {
        self.gate.size_in_bytes() + self.up.size_in_bytes() + self.down.size_in_bytes()
    }
}

