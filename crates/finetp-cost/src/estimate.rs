//! Per-component decode-step estimates: what a component's fine-grained size saves (weight
//! memory, weight-read time) and what it costs (the collectives it adds), on one rank.

use super::HardwareProfile;
use finetp_core::config::{Component, ModelConfig, ParallelConfig};
use finetp_core::memory::{MemoryReport, ModelShapes, Quantization, WeightFormat};

/// Bytes of one token id on the wire (the engines exchange `u32` ids).
const TOKEN_ID_BYTES: u64 = 4;

/// Batches above this are priced as this (16 Mi tokens per rank): no overflow on absurd input.
const MAX_TOKENS: usize = 1 << 24;

/// The collectives fine-grained TP issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CollectiveKind {
    AllGather,
    ReduceScatter,
    AllToAll,
    AllReduce,
}

impl CollectiveKind {
    pub const fn name(self) -> &'static str {
        match self {
            CollectiveKind::AllGather => "all_gather",
            CollectiveKind::ReduceScatter => "reduce_scatter",
            CollectiveKind::AllToAll => "all_to_all",
            CollectiveKind::AllReduce => "all_reduce",
        }
    }

    /// Steps of the ring (pairwise for all-to-all) algorithm over `p` ranks.
    pub const fn steps(self, p: usize) -> usize {
        let s = p.saturating_sub(1);
        match self {
            CollectiveKind::AllReduce => 2 * s,
            _ => s,
        }
    }

    /// Bytes one rank sends for a full buffer of `n` bytes: `(p−1)/p·n`, twice for all-reduce
    /// (reduce-scatter then all-gather).
    pub fn bytes_per_rank(self, p: usize, n: u64) -> u64 {
        let p = p.max(1) as u64;
        let once = n / p * (p - 1) + (n % p) * (p - 1) / p;
        if self == CollectiveKind::AllReduce { 2 * once } else { once }
    }
}

/// One collective a component issues per decode step, with its volume and time.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CollectiveCost {
    pub kind: CollectiveKind,
    /// What travels: "token ids", "hidden states", "logits", "head slices".
    pub payload: &'static str,
    pub group_size: usize,
    /// Calls per decode step (one per layer for o_proj and the dense MLPs).
    pub calls_per_step: usize,
    /// The whole buffer of one call (the gathered output, the reduced input, the exchanged
    /// send buffer), bytes.
    pub buffer_bytes: u64,
    /// Bytes one rank sends in one call.
    pub bytes_per_rank: u64,
    /// True when the group crosses a node boundary (priced with the inter-node link).
    pub spans_nodes: bool,
    /// Seconds per decode step, all calls: `calls·(α + steps·α_step + bytes_per_rank/bw)`.
    pub time_s: f64,
}

/// One component's trade-off at its configured size, per decode step on one rank, against the
/// same layout without its fine-grained TP (replicated, or split by standard TP when TP > 1).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ComponentEstimate {
    pub component: Component,
    /// The group size it runs with (1 = not sharded by fine-grained TP).
    pub size: usize,
    /// Weight bytes per rank saved (negative when it costs memory), from [`MemoryReport`].
    pub memory_saved_bytes: i64,
    /// Bytes streamed from device memory per step (weights plus GEMM activations) without and
    /// with the component's fine-grained TP.
    pub read_bytes_baseline: u64,
    pub read_bytes: u64,
    /// GEMM (or gather) seconds per step ([`HardwareProfile::gemm_s`], plus the profile's
    /// per-layer overhead).
    pub gemm_time_baseline_s: f64,
    pub gemm_time_s: f64,
    /// `gemm_time_baseline_s − gemm_time_s`.
    pub read_time_saved_s: f64,
    /// Collectives fine-grained TP adds (standard TP's own collectives are issued either way,
    /// on the same sizes, so they cancel).
    pub collectives: Vec<CollectiveCost>,
    /// Seconds of collectives added.
    pub comm_time_added_s: f64,
    /// Collective calls added per step.
    pub collectives_per_step: usize,
    /// Net change of the time per output token: `comm_time_added_s − read_time_saved_s`
    /// (positive = slower).
    pub net_tpot_delta_s: f64,
}

/// Estimates for every component of a layout.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Estimate {
    pub profile: String,
    pub batch_per_rank: usize,
    pub format: WeightFormat,
    /// One row per component, in [`Component::ALL`] order.
    pub rows: Vec<ComponentEstimate>,
    /// Total weight bytes per rank without / with the fine-grained sizes ([`MemoryReport`]).
    pub baseline_weight_bytes_per_rank: u64,
    pub weight_bytes_per_rank: u64,
}

impl Estimate {
    /// The row of `c` (every estimate from [`estimate`] has one per component).
    pub fn row(&self, c: Component) -> Option<&ComponentEstimate> {
        self.rows.iter().find(|r| r.component == c)
    }

    /// Net TPOT change of the whole layout, seconds (components are independent in the model).
    pub fn net_tpot_delta_s(&self) -> f64 {
        self.rows.iter().map(|r| r.net_tpot_delta_s).sum()
    }

    pub fn memory_saved_bytes(&self) -> i64 {
        self.rows.iter().map(|r| r.memory_saved_bytes).sum()
    }
}

/// Estimates every component of `parallel` for one decode step with `batch_per_rank` tokens
/// (one per sequence) on each rank. `parallel` should have been validated against `model`
/// ([`ModelConfig::validate_parallel`]); sizes are divided as integers.
pub fn estimate(
    model: &ModelConfig,
    parallel: &ParallelConfig,
    format: WeightFormat,
    batch_per_rank: usize,
    profile: &HardwareProfile,
) -> Estimate {
    let memory = MemoryReport::new(model, parallel, format);
    let ctx = Ctx::new(model, parallel, format, batch_per_rank, profile);
    let rows = Component::ALL.iter().map(|&c| ctx.component(c, memory.saving(c))).collect();
    Estimate {
        profile: profile.name.clone(),
        batch_per_rank,
        format,
        rows,
        baseline_weight_bytes_per_rank: memory.baseline_total(),
        weight_bytes_per_rank: memory.total(),
    }
}

/// Estimates one component at `size` (`None` = not configured) with every other component
/// unchanged: the per-component search of [`auto`](super::auto()) uses this.
pub(crate) fn component_estimate(
    model: &ModelConfig,
    parallel: &ParallelConfig,
    format: WeightFormat,
    batch_per_rank: usize,
    profile: &HardwareProfile,
    c: Component,
    size: Option<usize>,
) -> ComponentEstimate {
    let mut p = parallel.clone();
    p.finegrained_tp.set(c, size);
    Ctx::new(model, &p, format, batch_per_rank, profile).component(c, 0)
}

/// `(GEMM seconds, collective seconds, collective calls)` of one decode step of component `c`
/// at group size `p` (1 = replicated), on one rank with `batch` tokens, over every layer the
/// component spans; TP = PP = 1. What a calibration compares single measurements against.
pub fn component_times(
    c: Component,
    p: usize,
    model: &ModelConfig,
    format: &WeightFormat,
    batch: usize,
    profile: &HardwareProfile,
) -> (f64, f64, usize) {
    let p = p.max(1);
    let mut fg = finetp_core::config::FinegrainedTpConfig::default();
    fg.set(c, Some(p));
    let parallel = ParallelConfig {
        data_parallel_size: p,
        tensor_parallel_size: 1,
        pipeline_parallel_size: 1,
        enable_expert_parallel: false,
        finegrained_tp: fg,
    };
    let e = Ctx::new(model, &parallel, *format, batch, profile).component(c, 0);
    (e.gemm_time_s, e.comm_time_added_s, e.collectives_per_step)
}

/// The quantities every component's model needs.
struct Ctx<'a> {
    model: &'a ModelConfig,
    parallel: &'a ParallelConfig,
    format: WeightFormat,
    shapes: ModelShapes,
    tokens: u64,
    act: u64,
    profile: &'a HardwareProfile,
}

/// Bytes and FLOPs of one component's GEMMs (or gather) for a step.
struct Work {
    bytes: u64,
    flops: f64,
    int8: bool,
}

impl<'a> Ctx<'a> {
    fn new(
        model: &'a ModelConfig,
        parallel: &'a ParallelConfig,
        format: WeightFormat,
        batch: usize,
        profile: &'a HardwareProfile,
    ) -> Self {
        let shapes = ModelShapes::new(model);
        // Far above any decode batch; keeps every byte count well inside u64.
        let tokens = batch.min(MAX_TOKENS) as u64;
        Self { model, parallel, format, shapes, tokens, act: profile.activation_bytes as u64, profile }
    }

    fn component(&self, c: Component, memory_saved_bytes: i64) -> ComponentEstimate {
        let tp = self.parallel.tensor_parallel_size.max(1);
        let configured = self.parallel.finegrained_tp.get(c).map(|s| s.max(1));
        let size = configured.unwrap_or(1);
        // Without fine-grained TP: split by standard TP, this rank's tokens only. With it:
        // each TP part split again by the group size (`finetp_core::layers::LayerGroups`), the
        // whole group's tokens.
        let base = self.work(c, tp, self.tokens);
        let with = match configured {
            Some(p) => self.work(c, tp * p, p as u64 * self.tokens),
            None => self.work(c, tp, self.tokens),
        };
        let collectives = match configured {
            Some(p) => self.collectives(c, p),
            None => Vec::new(),
        };
        // Each layer call also pays a fixed overhead, the same with and without the component's
        // fine-grained TP (so it cancels in the saving).
        let calls = match c {
            Component::OProj => self.model.num_hidden_layers,
            Component::Mlp => self.model.dense_mlp_layers(),
            Component::Embedding | Component::LmHead => 1,
        } as f64;
        let overhead = calls * self.profile.layer_overhead_us * 1e-6;
        let time = |w: &Work| self.profile.gemm_s(w.bytes as f64, w.flops, w.int8) + overhead;
        let (gemm_time_baseline_s, gemm_time_s) = (time(&base), time(&with));
        let read_time_saved_s = gemm_time_baseline_s - gemm_time_s;
        let comm_time_added_s = collectives.iter().map(|x| x.time_s).sum::<f64>();
        ComponentEstimate {
            component: c,
            size,
            memory_saved_bytes,
            read_bytes_baseline: base.bytes,
            read_bytes: with.bytes,
            gemm_time_baseline_s,
            gemm_time_s,
            read_time_saved_s,
            collectives_per_step: collectives.iter().map(|x| x.calls_per_step).sum(),
            collectives,
            comm_time_added_s,
            net_tpot_delta_s: comm_time_added_s - read_time_saved_s,
        }
    }

    /// The step's memory traffic and FLOPs of `c` with its weight split `split` ways and
    /// `tokens` rows through it.
    fn work(&self, c: Component, split: usize, tokens: u64) -> Work {
        let (f, s, a) = (&self.format, &self.shapes, self.act);
        let split = split.max(1);
        let h = s.hidden as u64;
        let int8 = f.quantization == Quantization::W8A8;
        match c {
            // A gather: reads one table row per looked-up token (masked ids read row 0) and
            // writes the rows out; the table size does not matter.
            Component::Embedding => {
                let row = h * f.dtype.size_in_bytes() as u64;
                Work { bytes: tokens * (row + h * a), flops: 0.0, int8: false }
            }
            Component::LmHead => {
                let rows = (s.padded_vocab / split) as u64;
                Work {
                    bytes: f.plain_bytes(rows * h) + tokens * (h + rows) * a,
                    flops: 2.0 * tokens as f64 * rows as f64 * h as f64,
                    int8: false,
                }
            }
            Component::OProj => {
                let layers = self.model.num_hidden_layers as u64;
                let cols = (s.o_proj.inp / split) as u64;
                Work {
                    bytes: layers * (f.linear_bytes(s.o_proj, 1, split) + tokens * (cols + h) * a),
                    flops: 2.0 * (layers * tokens) as f64 * cols as f64 * h as f64,
                    int8,
                }
            }
            Component::Mlp => {
                let layers = self.model.dense_mlp_layers() as u64;
                let i = (s.dense_mlp[0].out / split) as u64;
                Work {
                    // gate_up reads x and writes 2·I/P; down reads I/P and writes H.
                    bytes: layers * (s.dense_mlp_bytes(f, split) + tokens * (2 * h + 3 * i) * a),
                    flops: 6.0 * (layers * tokens) as f64 * i as f64 * h as f64,
                    int8,
                }
            }
        }
    }

    /// What `c` issues per step with fine-grained size `p` (research §4): embedding
    /// all_gather(ids) + reduce_scatter(hidden); lm_head all_gather(hidden) +
    /// all_to_all(logits); o_proj all_to_all + reduce_scatter per layer; MLP all_gather +
    /// reduce_scatter per dense layer. Under TP `t` the lm_head's logits and o_proj's head
    /// slices are the TP part's (`1/t` of them); hidden states are whole.
    fn collectives(&self, c: Component, p: usize) -> Vec<CollectiveCost> {
        use CollectiveKind::*;
        let (t, a, h, pp) = (self.tokens, self.act, self.shapes.hidden as u64, p as u64);
        let tp = self.parallel.tensor_parallel_size.max(1) as u64;
        let hidden_group = pp * t * h * a;
        let span = p * self.parallel.tensor_parallel_size.max(1) * self.parallel.pipeline_parallel_size.max(1);
        let list: Vec<(CollectiveKind, &'static str, usize, u64)> = match c {
            Component::Embedding => vec![(AllGather, "token ids", 1, pp * t * TOKEN_ID_BYTES), (ReduceScatter, "hidden states", 1, hidden_group)],
            Component::LmHead => {
                // Each member holds [P·T, Vp/P] logits = T·Vp elements and keeps 1/P of them.
                let logits = t * self.shapes.padded_vocab as u64 / tp * a;
                vec![(AllGather, "hidden states", 1, hidden_group), (AllToAll, "logits", 1, logits)]
            }
            Component::OProj => {
                let layers = self.model.num_hidden_layers;
                let heads = t * self.shapes.o_proj.inp as u64 / tp * a;
                vec![(AllToAll, "head slices", layers, heads), (ReduceScatter, "hidden states", layers, hidden_group)]
            }
            Component::Mlp => {
                let layers = self.model.dense_mlp_layers();
                vec![(AllGather, "hidden states", layers, hidden_group), (ReduceScatter, "hidden states", layers, hidden_group)]
            }
        };
        self.priced(list, p, span)
    }

    fn priced(&self, list: Vec<(CollectiveKind, &'static str, usize, u64)>, p: usize, span: usize) -> Vec<CollectiveCost> {
        let link = self.profile.link(span);
        let spans_nodes = self.profile.spans_nodes(span);
        list.into_iter()
            .filter(|&(_, _, calls, _)| calls > 0 && p > 1)
            .map(|(kind, payload, calls, n)| {
                let bytes_per_rank = kind.bytes_per_rank(p, n);
                let one = link.alpha_s + kind.steps(p) as f64 * link.step_s + bytes_per_rank as f64 / link.bandwidth_bytes_per_s;
                CollectiveCost {
                    kind,
                    payload,
                    group_size: p,
                    calls_per_step: calls,
                    buffer_bytes: n,
                    bytes_per_rank,
                    spans_nodes,
                    time_s: calls as f64 * one,
                }
            })
            .collect()
    }
}
