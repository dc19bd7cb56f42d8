//! A replicated mixture-of-experts layer with DeepSeek-V3 routing (reference implementation).

use finetp_core::backend::{DType, Device, HostTensor, Tensor};
use finetp_core::config::{ModelConfig, MoeConfig};
use finetp_core::decoder::ModelError;
use finetp_core::layers::linear;
use finetp_core::shard::WeightSource;

use crate::mla::full;

/// One SwiGLU expert, replicated.
struct Expert<B: Device> {
    gate: Tensor<B>,
    up: Tensor<B>,
    down: Tensor<B>,
}

impl<B: Device> Expert<B> {
    fn load(be: &B, src: &dyn WeightSource, prefix: &str, h: usize, i: usize) -> Result<Self, ModelError> {
        Ok(Self {
            gate: full(be, src, &format!("{prefix}.gate_proj.weight"), &[i, h])?,
            up: full(be, src, &format!("{prefix}.up_proj.weight"), &[i, h])?,
            down: full(be, src, &format!("{prefix}.down_proj.weight"), &[h, i])?,
        })
    }

    fn forward(&self, be: &B, x: &Tensor<B>) -> Result<Tensor<B>, ModelError> {
        let (g, u) = (linear(be, x, &self.gate, None)?, linear(be, x, &self.up, None)?);
        let i = g.row_len();
        let mut gu = be.zeros(&[x.rows(), 2 * i], DType::F32)?;
        be.copy_block(&g, 0, 0, &mut gu, 0, 0, x.rows(), i)?;
        be.copy_block(&u, 0, 0, &mut gu, 0, i, x.rows(), i)?;
        let mut a = be.zeros(&[x.rows(), i], DType::F32)?;
        be.silu_mul(&gu, &mut a)?;
        Ok(linear(be, &a, &self.down, None)?)
    }

    fn bytes(&self) -> usize {
        self.gate.size_in_bytes() + self.up.size_in_bytes() + self.down.size_in_bytes()
    }
}

pub struct Moe<B: Device> {
    router: Tensor<B>,
    bias: Vec<f32>,
    experts: Vec<Expert<B>>,
    shared: Option<Expert<B>>,
    cfg: MoeConfig,
    n_group: usize,
    topk_group: usize,
    scaling: f32,
    norm_topk: bool,
}

impl<B: Device> Moe<B> {
    pub fn load(be: &B, cfg: &ModelConfig, src: &dyn WeightSource, prefix: &str, extra: &MoeExtra) -> Result<Self, ModelError> {
        let m = cfg.moe.ok_or_else(|| ModelError::Config("MoE layer without MoE config".into()))?;
        let (h, e) = (cfg.hidden_size, m.n_routed_experts);
        let bias_name = format!("{prefix}.gate.e_score_correction_bias");
        let bias = match src.shape(&bias_name) {
            Ok(_) => src.load_full(&bias_name)?.to_f32_vec().unwrap_or_default(),
            Err(_) => vec![0.0; e],
        };
        let experts = (0..e)
            .map(|j| Expert::load(be, src, &format!("{prefix}.experts.{j}"), h, m.moe_intermediate_size))
            .collect::<Result<Vec<_>, _>>()?;
        let shared = (m.n_shared_experts > 0)
            .then(|| Expert::load(be, src, &format!("{prefix}.shared_experts"), h, m.moe_intermediate_size * m.n_shared_experts))
            .transpose()?;
        Ok(Self {
            router: full(be, src, &format!("{prefix}.gate.weight"), &[e, h])?,
            bias,
            experts,
            shared,
            cfg: m,
            n_group: extra.n_group.max(1),
            topk_group: extra.topk_group.max(1),
            scaling: extra.routed_scaling_factor,
            norm_topk: extra.norm_topk_prob,
        })
    }

    /// `x [rows, H]` → `[rows, H]`: routed experts (weighted) plus shared experts.
    pub fn forward(&self, be: &B, x: &Tensor<B>) -> Result<Tensor<B>, ModelError> {
        let (rows, h) = (x.rows(), x.row_len());
        let scores = be.download(&linear(be, x, &self.router, None)?)?.to_f32_vec().unwrap_or_default();
        let e = self.experts.len();
        let mut out = vec![0f32; rows * h];
        let mut per_expert: Vec<Vec<(usize, f32)>> = vec![vec![]; e];
        for t in 0..rows {
            for (j, w) in self.route(&scores[t * e..(t + 1) * e]) {
                per_expert[j].push((t, w));
            }
        }
        for (j, toks) in per_expert.iter().enumerate().filter(|(_, t)| !t.is_empty()) {
            let mut xs = be.zeros(&[toks.len(), h], DType::F32)?;
            for (i, (t, _)) in toks.iter().enumerate() {
                be.copy_block(x, *t, 0, &mut xs, i, 0, 1, h)?;
            }
            let y = be.download(&self.experts[j].forward(be, &xs)?)?.to_f32_vec().unwrap_or_default();
            for (i, (t, w)) in toks.iter().enumerate() {
                for c in 0..h {
                    out[t * h + c] += w * y[i * h + c];
                }
            }
        }
        let mut out = be.upload(&HostTensor::f32(out, &[rows, h])?)?;
        if let Some(s) = &self.shared {
            be.add_assign(&mut out, &s.forward(be, x)?)?;
        }
        Ok(out)
    }

    /// V3 routing of one token: sigmoid scores; choice by score + correction bias, restricted to
    /// the `topk_group` groups with the best top-2 sums; weights are the plain scores,
    /// normalised, times `routed_scaling_factor`.
    fn route(&self, logits: &[f32]) -> Vec<(usize, f32)> {
        let e = logits.len();
        let s: Vec<f32> = logits.iter().map(|l| 1.0 / (1.0 + (-l).exp())).collect();
        let choice: Vec<f32> = s.iter().zip(&self.bias).map(|(a, b)| a + b).collect();
        let per_group = e / self.n_group;
        let mut groups: Vec<(usize, f32)> = (0..self.n_group)
            .map(|g| {
                let mut v: Vec<f32> = choice[g * per_group..(g + 1) * per_group].to_vec();
                v.sort_by(|a, b| b.total_cmp(a));
                (g, v.iter().take(2).sum())
            })
            .collect();
        groups.sort_by(|a, b| b.1.total_cmp(&a.1));
        let allowed: Vec<usize> = groups.iter().take(self.topk_group).map(|g| g.0).collect();
        let mut cand: Vec<usize> = (0..e).filter(|j| allowed.contains(&(j / per_group))).collect();
        cand.sort_by(|a, b| choice[*b].total_cmp(&choice[*a]));
        cand.truncate(self.cfg.num_experts_per_tok);
        let total: f32 = cand.iter().map(|j| s[*j]).sum::<f32>() + 1e-20;
        cand.iter().map(|&j| (j, if self.norm_topk { s[j] / total } else { s[j] } * self.scaling)).collect()
    }

    pub fn weight_bytes(&self) -> usize {
        self.router.size_in_bytes() + self.experts.iter().map(Expert::bytes).sum::<usize>() + self.shared.as_ref().map_or(0, Expert::bytes)
    }
}

/// V3 routing fields that the shared `ModelConfig` does not carry.
#[derive(Debug, Clone, Copy)]
pub struct MoeExtra {
    pub n_group: usize,
    pub topk_group: usize,
    pub routed_scaling_factor: f32,
    pub norm_topk_prob: bool,
}

impl Default for MoeExtra {
    fn default() -> Self {
        Self { n_group: 1, topk_group: 1, routed_scaling_factor: 1.0, norm_topk_prob: true }
    }
}
