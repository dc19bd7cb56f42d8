//! A mixture-of-experts layer with DeepSeek-V3 routing (reference implementation). Without
//! expert parallelism every rank holds every routed expert, each expert's intermediate split
//! by standard TP; with it (`--enable-expert-parallel`, the group in `GroupSet::ep`) rank `r`
//! of `P` holds routed experts `r·E/P .. (r+1)·E/P` whole, and tokens travel to their experts'
//! ranks and back (`dispatch.rs`). Shared experts are replicated either way.

use std::sync::Arc;

use finetp_core::backend::{Block, Collective, DType, Device, HostTensor, MoeRouting, Tensor};
use finetp_core::config::ModelConfig;
use finetp_core::decoder::ModelError;
use finetp_core::layers::linear;
use finetp_core::shard::WeightSource;

use crate::expert::Expert;
use crate::mla::full;

pub struct Moe<B: Device> {
    router: Tensor<B>,
    /// f32 `[E]`: `noaux_tc`'s correction bias (absent: no bias).
    bias: Option<Tensor<B>>,
    /// The routed experts this rank holds: all `E`, or under expert parallelism its `E/P`
    /// (global ids `first..first + experts.len()`).
    experts: Vec<Expert<B>>,
    first: usize,
    /// The expert-parallel group (`None`: experts replicated).
    ep: Option<Arc<dyn Collective<B>>>,
    shared: Option<Expert<B>>,
    rule: MoeRouting,
    /// The replica's TP group (`None` for TP 1): sums the experts' partial outputs.
    tp: Option<Arc<dyn Collective<B>>>,
}

impl<B: Device> Moe<B> {
    /// Loads the router (replicated), the shared experts, and the routed experts this rank
    /// holds: this TP rank's block of every expert, or (expert parallelism over `ep`) its
    /// `E/P` experts whole. A rank reads only the experts it holds.
    ///
    /// # Errors
    /// [`ModelError::Config`] for `E` not divisible by the EP size, or EP with TP > 1.
    pub fn load(be: &B, cfg: &ModelConfig, src: &dyn WeightSource, prefix: &str, tp: Arc<dyn Collective<B>>, ep: Option<Arc<dyn Collective<B>>>) -> Result<Self, ModelError> {
        let m = cfg.moe.ok_or_else(|| ModelError::Config("MoE layer without MoE config".into()))?;
        let split = (tp.info().rank, tp.info().size());
        let tp = (split.1 > 1).then_some(tp);
        let (h, e) = (cfg.hidden_size, m.n_routed_experts);
        let ep = ep.filter(|g| g.info().size() > 1);
        let (first, held) = match &ep {
            None => (0, e),
            Some(g) => {
                let p = g.info().size();
                if !e.is_multiple_of(p) || tp.is_some() {
                    return Err(ModelError::Config(format!("expert parallelism over {p} ranks needs the {e} routed experts to divide by {p} and TP 1 (TP is {})", split.1)));
                }
                (g.info().rank * e / p, e / p)
            }
        };
        let bias_name = format!("{prefix}.gate.e_score_correction_bias");
        let bias = match src.shape(&bias_name) {
            Ok(_) => {
                src.expect_shape(&bias_name, &[e])?;
                Some(be.upload(&src.load_full(&bias_name)?.into_dtype(DType::F32)?)?)
            }
            Err(_) => None,
        };
        let experts = (first..first + held)
            .map(|j| Expert::load(be, src, &format!("{prefix}.experts.{j}"), h, m.moe_intermediate_size, split))
            .collect::<Result<Vec<_>, _>>()?;
        let shared = (m.n_shared_experts > 0)
            .then(|| Expert::load(be, src, &format!("{prefix}.shared_experts"), h, m.moe_intermediate_size * m.n_shared_experts, split))
            .transpose()?;
        Ok(Self {
            router: full(be, src, &format!("{prefix}.gate.weight"), &[e, h])?,
            bias,
            experts,
            first,
            ep,
            shared,
            rule: MoeRouting::from(&m),
            tp,
        })
    }

    /// `x [rows, H]` → `[rows, H]`: routed experts (weighted) plus shared experts. Routing runs
    /// on the device ([`moe_route`](finetp_core::backend::Kernels::moe_route)); the chosen
    /// experts are read back to gather each expert's tokens, which is what keeps a MoE step from
    /// being captured as a graph (the expert-parallel work moves dispatch onto the device).
    pub fn forward(&self, be: &B, x: &Tensor<B>) -> Result<Tensor<B>, ModelError> {
        let (rows, h, k) = (x.rows(), x.row_len(), self.rule.top_k);
        let logits = linear(be, x, &self.router, None)?; // [rows, E]
        let logits = if logits.dtype() == DType::F32 { logits } else { be.upload(&be.download(&logits)?.into_dtype(DType::F32)?)? };
        let mut ids = be.zeros(&[rows, k], DType::U32)?;
        let mut weights = be.zeros(&[rows, k], DType::F32)?;
        be.moe_route(&logits, self.bias.as_ref(), &self.rule, &mut ids, &mut weights)?;
        let ids = be.download(&ids)?;
        let (Some(weights), finetp_core::backend::HostData::U32(ids)) = (be.download(&weights)?.to_f32_vec(), ids.data) else {
            return Err(ModelError::Batch("moe_route gave no u32 ids and f32 weights".into()));
        };
        if let Some(ep) = &self.ep {
            let mut out = crate::dispatch::routed(crate::dispatch::Held { experts: &self.experts, first: self.first }, be, ep.as_ref(), x, &ids, &weights, k)?;
            if let Some(s) = &self.shared {
                be.add_assign(&mut out, &s.forward(be, x)?)?;
            }
            return Ok(out);
        }
        let e = self.experts.len();
        let mut out = vec![0f32; rows * h];
        let mut per_expert: Vec<Vec<(usize, f32)>> = vec![vec![]; e];
        for t in 0..rows {
            for j in 0..k {
                let id = ids[t * k + j] as usize;
                let slot = per_expert.get_mut(id).ok_or_else(|| ModelError::Batch(format!("moe_route picked expert {id} of {e}")))?;
                slot.push((t, weights[t * k + j]));
            }
        }
        for (j, toks) in per_expert.iter().enumerate().filter(|(_, t)| !t.is_empty()) {
            let mut xs = be.zeros(&[toks.len(), h], x.dtype())?;
            for (i, (t, _)) in toks.iter().enumerate() {
                be.copy_block(x, &mut xs, Block::rows(*t, i, 1, h))?;
            }
            let y = be.download(&self.experts[j].forward(be, &xs)?)?.to_f32_vec().unwrap_or_default();
            for (i, (t, w)) in toks.iter().enumerate() {
                for c in 0..h {
                    out[t * h + c] += w * y[i * h + c];
                }
            }
        }
        let mut out = be.upload(&HostTensor::f32(out, &[rows, h])?.into_dtype(x.dtype())?)?;
        if let Some(s) = &self.shared {
            be.add_assign(&mut out, &s.forward(be, x)?)?;
        }
        if let Some(tp) = &self.tp {
            tp.all_reduce_sum(&mut out)?; // Partial over TP → Replicated
        }
        Ok(out)
    }

    pub fn weight_bytes(&self) -> usize {
        self.router.size_in_bytes()
            + self.bias.as_ref().map_or(0, Tensor::size_in_bytes)
            + self.experts.iter().map(Expert::bytes).sum::<usize>()
            + self.shared.as_ref().map_or(0, Expert::bytes)
    }
}
