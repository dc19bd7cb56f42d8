//! Attention output projection, row-parallel over the o_proj group.

use super::{LayerError, LayerGroups, check_divides, linear};
use crate::backend::{Block, DType, Device, Tensor};
use crate::parallel::mappings::{exchange, reduce_scatter_tokens};
use crate::shard::{Axis, ShardSpec, WeightSource};

/// o_proj with its input width `D = num_heads × v_head_dim` split in `P` column blocks.
/// Attention runs data-parallel on each rank as usual; then an all-to-all turns "my tokens, all
/// head slices" into "the group's tokens, my head slice", each member multiplies by its column
/// block of o_proj (a partial sum over head slices) and a reduce-scatter returns each rank its
/// own tokens. Works in prefill and decode, eager and graph, with uneven and zero counts
/// (vLLM-Ascend supports graph-mode decode only, research §5).
///
/// Under TP `t` attention runs on the TP rank's heads, so its output is the TP part `[T, D/t]`
/// of the columns; the layer above works on that part (columns part `j·P + m` of `t·P`) and a
/// TP all-reduce sums the replica's parts, as Megatron's row-parallel o_proj does.
pub struct RowParallelOProj<B: Device> {
    /// `[H, D/(t·P)]`.
    weight: Tensor<B>,
    /// Added once, by part 0, so the reduce-scatter and the TP all-reduce sum it exactly once.
    bias: Option<Tensor<B>>,
    /// `D/t`: the width of this TP rank's attention output.
    in_features: usize,
    groups: LayerGroups<B>,
}

impl<B: Device> RowParallelOProj<B> {
    /// Loads this rank's columns of `weight_name` (`[hidden, in_features]`) and, on part 0,
    /// the bias.
    pub fn load(
        be: &B,
        src: &dyn WeightSource,
        weight_name: &str,
        bias_name: Option<&str>,
        hidden: usize,
        in_features: usize,
        groups: LayerGroups<B>,
    ) -> Result<Self, LayerError> {
        src.expect_shape(weight_name, &[hidden, in_features])?;
        let (part, parts) = (groups.part(), groups.parts());
        check_divides("RowParallelOProj", "o_proj input width", in_features, parts)?;
        let weight = super::upload_weight(be, src, weight_name, &ShardSpec::even(Axis::Cols, in_features, part, parts))?;
        let bias = match bias_name {
            Some(b) if part == 0 => {
                src.expect_shape(b, &[hidden])?;
                Some(be.upload(&src.load_full(b)?.into_dtype(DType::F32)?)?)
            }
            _ => None,
        };
        let in_features = in_features / groups.tp_size();
        Ok(Self { weight, bias, in_features, groups })
    }

    /// `x`: `[T, D/t]` attention output of this rank's tokens (`Shard(tokens)`) and its TP
    /// rank's heads → `[T, H]` (`Shard(tokens)`, replicated over TP), activations.
    pub fn forward(&self, be: &B, x: &Tensor<B>, counts: &[usize]) -> Result<Tensor<B>, LayerError> {
        let group = &*self.groups.fine;
        let (t, size) = (x.rows(), group.info().size());
        if x.row_len() != self.in_features {
            return Err(LayerError::Shape {
                layer: "RowParallelOProj",
                detail: format!("input rows of {} values, expected {}", x.row_len(), self.in_features),
            });
        }
        let mut out = if size == 1 {
            linear(be, x, &self.weight, self.bias.as_ref())?
        } else {
            let cw = self.in_features / size;
            let mut send = be.zeros(&[size * t, cw], x.dtype())?; //      [P·T, D/tP] block q = head slice q
            for q in 0..size {
                be.copy_block(x, &mut send, Block::at((0, q * cw), (q * t, 0), t, cw))?;
            }
            let recv = exchange(be, group, send, &vec![t; size], counts)?; // [ΣT, D/tP] my head slice
            let partial = linear(be, &recv, &self.weight, self.bias.as_ref())?; // [ΣT, H] Partial
            reduce_scatter_tokens(be, group, partial, counts)? //                  [T, H]  Shard(tokens)
        };
        self.groups.reduce_tp(&mut out)?; //                                        [T, H]  Replicated over TP
        Ok(out)
    }

    pub fn weight_bytes(&self) -> usize {
        self.weight.size_in_bytes() + self.bias.as_ref().map_or(0, Tensor::size_in_bytes)
    }
}
