//! Dense MLP, tensor-parallel over the MLP group.

use super::{LayerError, LayerGroups, check_divides, linear};
use crate::backend::{DType, Device, HostTensor, Tensor};
use crate::parallel::mappings::{gather_tokens, reduce_scatter_tokens};
use crate::shard::{Axis, ShardSpec, WeightSource};

/// SwiGLU MLP with the intermediate dimension split in `P` blocks (Megatron's
/// sequence-parallel MLP): gather the group's tokens, column-parallel `gate_up [2I/P, H]` (gate
/// block then up block), SiLU·mul, row-parallel `down [H, I/P]`, reduce-scatter back to each
/// rank's own tokens. Applies to dense models and to the dense layers of MoE models. Under TP
/// `t` the intermediate is split in `t·P` blocks (part `j·P + m`) and a TP all-reduce sums the
/// replica's parts (Megatron's MLP).
pub struct ParallelMlp<B: Device> {
    gate_up: Tensor<B>,
    down: Tensor<B>,
    intermediate_per_rank: usize,
    groups: LayerGroups<B>,
}

impl<B: Device> ParallelMlp<B> {
    /// Loads `{prefix}.gate_proj.weight`, `{prefix}.up_proj.weight` (`[I, H]`) and
    /// `{prefix}.down_proj.weight` (`[H, I]`), this member's blocks only.
    pub fn load(
        be: &B,
        src: &dyn WeightSource,
        prefix: &str,
        hidden: usize,
        intermediate: usize,
        groups: LayerGroups<B>,
    ) -> Result<Self, LayerError> {
        let (rank, size) = (groups.part(), groups.parts());
        let per = check_divides("ParallelMlp", "intermediate size", intermediate, size)?;
        let rows = ShardSpec::even(Axis::Rows, intermediate, rank, size);
        let mut parts = Vec::with_capacity(2);
        for proj in ["gate_proj", "up_proj"] {
            let name = format!("{prefix}.{proj}.weight");
            src.expect_shape(&name, &[intermediate, hidden])?;
            parts.push(super::host_weight(be, src, &name, &rows)?);
        }
        // Stacked in one format: a file may store gate and up in different ones.
        if parts[0].dtype() != parts[1].dtype() {
            parts = parts.into_iter().map(|p| p.into_dtype(DType::F32)).collect::<Result<_, _>>()?;
        }
        let gate_up = be.upload(&HostTensor::concat_rows(&parts)?)?;
        let down_name = format!("{prefix}.down_proj.weight");
        src.expect_shape(&down_name, &[hidden, intermediate])?;
        let down = super::upload_weight(be, src, &down_name, &ShardSpec::even(Axis::Cols, intermediate, rank, size))?;
        Ok(Self { gate_up, down, intermediate_per_rank: per, groups })
    }

    /// `x`: `[T, H]` of this rank (`Shard(tokens)`, the same on the replica's TP ranks) →
    /// `[T, H]` (`Shard(tokens)`, replicated over TP), activations.
    pub fn forward(&self, be: &B, x: Tensor<B>, counts: &[usize]) -> Result<Tensor<B>, LayerError> {
        let group = &*self.groups.fine;
        let xg = gather_tokens(be, group, x, counts)?; //                  [ΣT, H]      Replicated
        let gu = linear(be, &xg, &self.gate_up, None)?; //                 [ΣT, 2I/tP]  Shard(ff)
        let mut act = be.zeros(&[gu.rows(), self.intermediate_per_rank], gu.dtype())?;
        be.silu_mul(&gu, &mut act)?; //                                    [ΣT, I/tP]
        let partial = linear(be, &act, &self.down, None)?; //              [ΣT, H]      Partial
        let mut out = reduce_scatter_tokens(be, group, partial, counts)?; // [T, H]     Shard(tokens), Partial over TP
        self.groups.reduce_tp(&mut out)?; //                                 [T, H]     Replicated over TP
        Ok(out)
    }

    pub fn weight_bytes(&self) -> usize {
        self.gate_up.size_in_bytes() + self.down.size_in_bytes()
    }
}
