//! Mixture-of-experts routing on the CPU, exactly as the contract states
//! ([`Kernels::moe_route`](finetp_core::backend::Kernels::moe_route), HF transformers'
//! DeepSeek-V2/V3 rule): the reference for every backend.

use finetp_core::backend::{BackendError, MoeRouting, Tensor, checks};
use finetp_core::config::{MoeScoring, TopkMethod};

use crate::storage::CpuBackend;

/// `(expert, weight)` of one token's `rule.top_k` experts, best first.
pub(crate) fn route_row(logits: &[f32], bias: Option<&[f32]>, rule: &MoeRouting) -> Vec<(u32, f32)> {
    let e = logits.len();
    let s: Vec<f32> = match rule.scoring {
        MoeScoring::Sigmoid => logits.iter().map(|l| 1.0 / (1.0 + (-l).exp())).collect(),
        MoeScoring::Softmax => {
            let max = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let ex: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
            let sum: f32 = ex.iter().sum();
            ex.iter().map(|x| x / sum).collect()
        }
    };
    let mut choice: Vec<f32> = match (rule.topk_method, bias) {
        (TopkMethod::NoauxTc, Some(b)) => s.iter().zip(b).map(|(a, b)| a + b).collect(),
        _ => s.clone(),
    };
    if rule.topk_method != TopkMethod::Greedy && rule.n_group > 1 {
        let per = e / rule.n_group;
        let mut groups: Vec<(usize, f32)> = (0..rule.n_group)
            .map(|g| {
                let mut v: Vec<f32> = choice[g * per..(g + 1) * per].to_vec();
                v.sort_by(|a, b| b.total_cmp(a));
                let score = if rule.topk_method == TopkMethod::NoauxTc { v.iter().take(2).sum() } else { v[0] };
                (g, score)
            })
            .collect();
        groups.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut allowed = vec![false; rule.n_group];
        for g in groups.iter().take(rule.topk_group) {
            allowed[g.0] = true;
        }
        for (j, c) in choice.iter_mut().enumerate() {
            if !allowed[j / per] {
                *c = 0.0;
            }
        }
    }
    let mut cand: Vec<usize> = (0..e).collect();
    cand.sort_by(|a, b| choice[*b].total_cmp(&choice[*a]).then(a.cmp(b)));
    cand.truncate(rule.top_k);
    let total: f32 = cand.iter().map(|j| s[*j]).sum::<f32>() + 1e-20;
    cand.iter().map(|&j| (j as u32, if rule.norm_topk_prob { s[j] / total } else { s[j] } * rule.routed_scaling_factor)).collect()
}

pub(super) fn moe_route(
    logits: &Tensor<CpuBackend>,
    bias: Option<&Tensor<CpuBackend>>,
    rule: &MoeRouting,
    ids: &mut Tensor<CpuBackend>,
    weights: &mut Tensor<CpuBackend>,
) -> Result<(), BackendError> {
    let (t, e) = checks::moe_route(logits, bias, rule, ids, weights)?;
    let l = logits.buffer().as_f32("moe_route (router logits)")?;
    let b = bias.map(|b| b.buffer().as_f32("moe_route (bias)")).transpose()?;
    let k = rule.top_k;
    let ids = ids.buffer_mut().as_u32_mut("moe_route (ids)")?;
    let w = weights.buffer_mut().as_f32_mut("moe_route (weights)")?;
    for r in 0..t {
        for (i, (id, wt)) in route_row(&l[r * e..(r + 1) * e], b, rule).into_iter().enumerate() {
            ids[r * k + i] = id;
            w[r * k + i] = wt;
        }
    }
    Ok(())
}
