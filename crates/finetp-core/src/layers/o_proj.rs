//! Attention output projection, row-parallel over the o_proj group.

use std::sync::Arc;

use super::{LayerError, check_divides, linear};
use crate::backend::{Block, Collective, DType, Device, Tensor};
use crate::parallel::mappings::{exchange, reduce_scatter_tokens};
use crate::shard::{Axis, ShardSpec, WeightSource};

/// o_proj with its input width `D = num_heads × v_head_dim` split in `P` column blocks.
/// Attention runs data-parallel on each rank as usual; then an all-to-all turns "my tokens, all
/// head slices" into "the group's tokens, my head slice", each member multiplies by its column
/// block of o_proj (a partial sum over head slices) and a reduce-scatter returns each rank its
/// own tokens. Works in prefill and decode, eager and graph, with uneven and zero counts
/// (vLLM-Ascend supports graph-mode decode only, research §5).
pub struct RowParallelOProj<B: Device> {
    /// `[H, D/P]`.
    weight: Tensor<B>,
    /// Added once, by member 0, so the reduce-scatter sums it exactly once.
    bias: Option<Tensor<B>>,
    in_features: usize,
    group: Arc<dyn Collective<B>>,
}

impl<B: Device> RowParallelOProj<B> {
    /// Loads this member's columns of `weight_name` (`[hidden, in_features]`) and, on member 0,
    /// the bias.
    pub fn load(
        be: &B,
        src: &dyn WeightSource,
        weight_name: &str,
        bias_name: Option<&str>,
        hidden: usize,
        in_features: usize,
        group: Arc<dyn Collective<B>>,
    ) -> Result<Self, LayerError> {
        src.expect_shape(weight_name, &[hidden, in_features])?;
        let (rank, size) = (group.info().rank, group.info().size());
        check_divides("RowParallelOProj", "o_proj input width", in_features, size)?;
        let weight = be.upload(&src.load(weight_name, &ShardSpec::even(Axis::Cols, in_features, rank, size))?)?;
        let bias = match bias_name {
            Some(b) if rank == 0 => {
                src.expect_shape(b, &[hidden])?;
                Some(be.upload(&src.load_full(b)?.into_dtype(DType::F32)?)?)
            }
            _ => None,
        };
        Ok(Self { weight, bias, in_features, group })
    }

    /// `x`: `[T, D]` attention output of this rank's tokens (`Shard(tokens)`) → `[T, H]`
    /// (`Shard(tokens)`), activations.
    pub fn forward(&self, be: &B, x: &Tensor<B>, counts: &[usize]) -> Result<Tensor<B>, LayerError> {
        let (t, size) = (x.rows(), self.group.info().size());
        if x.row_len() != self.in_features {
            return Err(LayerError::Shape {
                layer: "RowParallelOProj",
                detail: format!("input rows of {} values, expected {}", x.row_len(), self.in_features),
            });
        }
        if size == 1 {
            return Ok(linear(be, x, &self.weight, self.bias.as_ref())?);
        }
        let cw = self.in_features / size;
        let mut send = be.zeros(&[size * t, cw], x.dtype())?; //           [P·T, D/P] block q = head slice q
        for q in 0..size {
            be.copy_block(x, &mut send, Block::at((0, q * cw), (q * t, 0), t, cw))?;
        }
        let recv = exchange(be, &*self.group, send, &vec![t; size], counts)?; // [ΣT, D/P] my head slice
        let partial = linear(be, &recv, &self.weight, self.bias.as_ref())?; //   [ΣT, H]   Partial
        Ok(reduce_scatter_tokens(be, &*self.group, partial, counts)?) //        [T, H]    Shard(tokens)
    }

    pub fn weight_bytes(&self) -> usize {
        self.weight.size_in_bytes() + self.bias.as_ref().map_or(0, Tensor::size_in_bytes)
    }
}
