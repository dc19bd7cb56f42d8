//! Choosing the sizes: per component, the size among the divisors of DP (valid for the model's
//! shapes) that minimises TPOT, subject to an optional per-rank weight-memory budget.

use super::estimate::component_estimate;
use super::{Estimate, HardwareProfile, estimate};
use finetp_core::config::{Component, ConfigError, FinegrainedTpConfig, ModelConfig, ParallelConfig};
use finetp_core::memory::{MemoryReport, WeightFormat, gib};

/// Why no sizes can be chosen.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum CostError {
    #[error(
        "no fine-grained TP sizes fit a budget of {:.3} GiB of weights per rank; the smallest per-rank weight footprint reachable at DP {dp} is {:.3} GiB ({} bytes, with {})",
        gib(*budget_bytes as i64), gib(*min_bytes as i64), min_bytes, smallest.to_additional_config_json()
    )]
    OverBudget { budget_bytes: u64, min_bytes: u64, dp: usize, smallest: FinegrainedTpConfig },

    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// The chosen sizes, their estimate and the resulting per-rank weight bytes.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AutoChoice {
    /// Components whose best size is 1 are left out (not sharded).
    pub config: FinegrainedTpConfig,
    /// The input layout with `config` in place.
    pub parallel: ParallelConfig,
    pub estimate: Estimate,
    /// Total weight bytes per rank with `config` ([`MemoryReport::total`]).
    pub weight_bytes_per_rank: u64,
    pub memory_budget_bytes: Option<u64>,
}

/// One component's options: `(size, TPOT delta in s, weight bytes saved per rank)`.
type Options = Vec<(Option<usize>, f64, i64)>;

/// Picks the sizes. `parallel`'s own fine-grained sizes are ignored. Each component's TPOT
/// delta does not depend on the others', so without a budget every component takes its own
/// best size; with one, every combination is searched for the least TPOT that fits (the
/// embedding and lm_head are priced as a pair, since a tied table is shared only when their
/// sizes agree). Ties go to less memory, then to smaller groups.
///
/// # Errors
/// [`CostError::OverBudget`] naming the smallest reachable footprint when even that exceeds
/// `memory_budget_bytes`.
pub fn auto(
    model: &ModelConfig,
    parallel: &ParallelConfig,
    format: WeightFormat,
    batch_per_rank: usize,
    profile: &HardwareProfile,
    memory_budget_bytes: Option<u64>,
) -> Result<AutoChoice, CostError> {
    let base = ParallelConfig { finegrained_tp: FinegrainedTpConfig::default(), ..parallel.clone() };
    let baseline_total = MemoryReport::new(model, &base, format).baseline_total();
    let options = |c: Component| -> Options {
        candidates(model, &base, c)
            .into_iter()
            .map(|size| {
                let e = component_estimate(model, &base, format, batch_per_rank, profile, c, size);
                (size, e.net_tpot_delta_s, saving(model, &base, format, &[(c, size)]))
            })
            .collect()
    };
    let (emb, lm, o, mlp) = (options(Component::Embedding), options(Component::LmHead), options(Component::OProj), options(Component::Mlp));
    // The embedding/lm_head pair, with the memory of both sizes together.
    let pairs: Vec<([Option<usize>; 2], f64, i64)> = emb
        .iter()
        .flat_map(|e| lm.iter().map(move |l| (e, l)))
        .map(|(e, l)| {
            let pair = [(Component::Embedding, e.0), (Component::LmHead, l.0)];
            ([e.0, l.0], e.1 + l.1, saving(model, &base, format, &pair))
        })
        .collect();

    let mut best: Option<Candidate> = None;
    let mut smallest: Option<Candidate> = None;
    for (pair, pair_dt, pair_saved) in &pairs {
        for op in &o {
            for m in &mlp {
                let c = Candidate {
                    sizes: [pair[0], pair[1], op.0, m.0],
                    delta_s: pair_dt + op.1 + m.1,
                    bytes: baseline_total.saturating_add_signed(-(pair_saved + op.2 + m.2)),
                };
                if smallest.as_ref().is_none_or(|s| c.bytes < s.bytes) {
                    smallest = Some(c.clone());
                }
                if memory_budget_bytes.is_none_or(|b| c.bytes <= b) && best.as_ref().is_none_or(|b| c.better_than(b)) {
                    best = Some(c);
                }
            }
        }
    }
    let Some(best) = best else {
        let smallest = smallest.map(|s| (s.bytes, s.config())).unwrap_or((baseline_total, FinegrainedTpConfig::default()));
        return Err(CostError::OverBudget {
            budget_bytes: memory_budget_bytes.unwrap_or(0),
            min_bytes: smallest.0,
            dp: base.data_parallel_size,
            smallest: smallest.1,
        });
    };
    let config = best.config();
    let chosen = ParallelConfig::new(
        base.data_parallel_size,
        base.tensor_parallel_size,
        base.pipeline_parallel_size,
        base.enable_expert_parallel,
        config,
    )?;
    let estimate = estimate(model, &chosen, format, batch_per_rank, profile);
    Ok(AutoChoice {
        config,
        weight_bytes_per_rank: estimate.weight_bytes_per_rank,
        parallel: chosen,
        estimate,
        memory_budget_bytes,
    })
}

#[derive(Debug, Clone)]
struct Candidate {
    /// In [`Component::ALL`] order.
    sizes: [Option<usize>; 4],
    delta_s: f64,
    bytes: u64,
}

impl Candidate {
    fn better_than(&self, other: &Candidate) -> bool {
        const SAME_S: f64 = 1e-12;
        if (self.delta_s - other.delta_s).abs() > SAME_S {
            return self.delta_s < other.delta_s;
        }
        if self.bytes != other.bytes {
            return self.bytes < other.bytes;
        }
        let total = |c: &Candidate| c.sizes.iter().map(|s| s.unwrap_or(1)).sum::<usize>();
        total(self) < total(other)
    }

    fn config(&self) -> FinegrainedTpConfig {
        let mut fg = FinegrainedTpConfig::default();
        for (c, s) in Component::ALL.iter().zip(self.sizes) {
            fg.set(*c, s.filter(|&s| s > 1));
        }
        fg
    }
}

/// Sizes `c` may take: not sharded, or a divisor `> 1` of DP that the model's shapes divide
/// (the same rules as [`ModelConfig::validate_parallel`]).
fn candidates(model: &ModelConfig, base: &ParallelConfig, c: Component) -> Vec<Option<usize>> {
    let dp = base.data_parallel_size;
    let valid = |s: usize| {
        let mut fg = FinegrainedTpConfig::default();
        fg.set(c, Some(s));
        ParallelConfig::new(dp, base.tensor_parallel_size, base.pipeline_parallel_size, base.enable_expert_parallel, fg)
            .is_ok_and(|q| model.validate_parallel(&q).is_ok())
    };
    std::iter::once(None).chain((2..=dp).filter(|s| dp.is_multiple_of(*s) && valid(*s)).map(Some)).collect()
}

/// Weight bytes per rank saved by setting `sizes` on top of `base`.
fn saving(model: &ModelConfig, base: &ParallelConfig, format: WeightFormat, sizes: &[(Component, Option<usize>)]) -> i64 {
    let mut p = base.clone();
    for (c, s) in sizes {
        p.finegrained_tp.set(*c, *s);
    }
    let r = MemoryReport::new(model, &p, format);
    sizes.iter().map(|(c, _)| r.saving(*c)).sum()
}
