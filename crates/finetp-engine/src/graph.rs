//! Graph mode's decode steps: captured once, replayed every step.
//!
//! The first static-shape decode step uploads its inputs into tensors that then stay fixed,
//! captures the model's forward and the sampling of its logits on them (every kernel, GEMM, copy and collective; see
//! `finetp_core::backend::CapturedGraph`), and replays it. Later decode steps only rewrite
//! those input tensors and replay. A backend that cannot capture, or a model whose forward
//! needs the host mid-step (DeepSeek's MoE routing today), runs the same static shapes eagerly
//! instead, and the report says why.
//!
//! Lock-step: every rank captures on the same step (the first step where no DP rank
//! prefills), so the collectives recorded by the members of a group match one for one.

use finetp_core::backend::{BackendError, CapturedGraph, CommError, Device, Tensor};
use finetp_core::decoder::{CausalLm, KvCache, ModelError, StepBatch, StepInputs};
use finetp_core::layers::LayerError;
use finetp_core::parallel::StepCounts;

use crate::EngineError;

/// What graph mode did on one rank.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GraphReport {
    /// Calls recorded in the captured decode step (0 if none was captured).
    pub captured_ops: usize,
    /// Decode steps run by replaying it.
    pub replays: usize,
    /// Why decode steps ran eagerly (with the same static shapes) instead.
    pub eager_reason: Option<String>,
    /// The batch sizes (decode rows per rank) captured, one graph each.
    #[serde(default)]
    pub buckets: Vec<usize>,
}

/// Graph mode's decode graphs, one per batch-size bucket: a decode step of `n` rows on the
/// busiest rank runs the graph of the smallest bucket that holds `n`, every rank padded to it
/// (vLLM's cudagraph capture sizes). Buckets are captured the first time a step needs them.
pub(crate) struct DecodeGraphs<B: Device> {
    enabled: bool,
    buckets: Vec<usize>,
    graphs: std::collections::BTreeMap<usize, DecodeGraph<B>>,
}

impl<B: Device> DecodeGraphs<B> {
    /// Buckets 1, 2, 4, … up to `max_rows`, and `max_rows` itself.
    pub(crate) fn new(enabled: bool, max_rows: usize) -> Self {
        let max_rows = max_rows.max(1);
        let mut buckets: Vec<usize> = std::iter::successors(Some(1usize), |b| b.checked_mul(2)).take_while(|&b| b < max_rows).collect();
        buckets.push(max_rows);
        Self { enabled, buckets, graphs: std::collections::BTreeMap::new() }
    }

    /// The bucket a decode step whose busiest rank runs `rows` rows pads to.
    pub(crate) fn bucket(&self, rows: usize) -> usize {
        self.buckets.iter().copied().find(|&b| b >= rows).unwrap_or(rows)
    }

    /// The graph of `bucket`.
    pub(crate) fn of(&mut self, bucket: usize) -> &mut DecodeGraph<B> {
        let enabled = self.enabled;
        self.graphs.entry(bucket).or_insert_with(|| DecodeGraph::new(enabled))
    }

    pub(crate) fn report(&self) -> Option<GraphReport> {
        if !self.enabled {
            return None;
        }
        let mut r = GraphReport { captured_ops: 0, replays: 0, eager_reason: None, buckets: vec![] };
        for (&bucket, g) in &self.graphs {
            let Some(one) = g.report() else { continue };
            if one.captured_ops > 0 {
                r.buckets.push(bucket);
            }
            r.captured_ops += one.captured_ops;
            r.replays += one.replays;
            r.eager_reason = r.eager_reason.or(one.eager_reason);
        }
        Some(r)
    }
}

enum State<B: Device> {
    /// Nothing captured yet.
    Empty,
    /// The captured step and the tensors it reads and writes.
    /// `ids`: the sampled tokens the graph writes (u32 `[M]`).
    Ready { batch: Box<StepBatch<B>>, ids: Tensor<B>, graph: Box<dyn CapturedGraph>, kv_id: usize },
    /// Capture is not possible here: run static shapes eagerly.
    Eager { reason: String },
}

/// One rank's decode graph.
pub(crate) struct DecodeGraph<B: Device> {
    enabled: bool,
    state: State<B>,
    replays: usize,
}

impl<B: Device> DecodeGraph<B> {
    pub(crate) fn new(enabled: bool) -> Self {
        Self { enabled, state: State::Empty, replays: 0 }
    }

    pub(crate) fn report(&self) -> Option<GraphReport> {
        self.enabled.then(|| match &self.state {
            State::Empty => GraphReport { captured_ops: 0, replays: 0, eager_reason: None, buckets: vec![] },
            State::Ready { graph, .. } => GraphReport { captured_ops: graph.ops(), replays: self.replays, eager_reason: None, buckets: vec![] },
            State::Eager { reason } => GraphReport { captured_ops: 0, replays: 0, eager_reason: Some(reason.clone()), buckets: vec![] },
        })
    }

    /// Runs one static-shape decode step (`inputs` already padded to the capacity, `counts`
    /// uniform) and returns its sampled tokens, one per logit row. `model` and `kv` must be the same on every call: the
    /// captured graph points into both.
    pub(crate) fn step(
        &mut self,
        rank: usize,
        be: &B,
        model: &dyn CausalLm<B>,
        kv: &mut KvCache<B>,
        inputs: &StepInputs,
        counts: StepCounts,
    ) -> Result<Vec<u32>, EngineError> {
        let be_err = |source| EngineError::Backend { rank, source };
        let kv_id = std::ptr::from_ref(kv) as usize;
        if matches!(self.state, State::Empty) {
            self.capture(rank, be, model, kv, inputs, counts.clone())?;
        }
        match &mut self.state {
            State::Ready { batch, ids, graph, kv_id: captured } => {
                if *captured != kv_id {
                    return Err(EngineError::Config("a decode graph was replayed with another KV cache than it captured".into()));
                }
                batch.write(be, inputs).map_err(be_err)?;
                // SAFETY: the graph's buffers outside itself are the weights of `model`, the KV
                // cache `kv` (checked above to be the captured one; neither moves nor is
                // touched by anything else during this call) and `batch`/`ids`, which this
                // state owns next to the graph.
                unsafe { graph.replay() }.map_err(|source| EngineError::Replay { rank, source })?;
                self.replays += 1;
                crate::step::read_ids(be, ids).map_err(be_err)
            }
            _ => crate::step::eager_step(rank, be, model, kv, inputs, counts.clone(), counts, None).map(|(ids, _)| ids),
        }
    }

    /// Captures the step into `State::Ready`, or settles on `State::Eager` when the backend or
    /// the model cannot be captured.
    fn capture(&mut self, rank: usize, be: &B, model: &dyn CausalLm<B>, kv: &mut KvCache<B>, inputs: &StepInputs, counts: StepCounts) -> Result<(), EngineError> {
        let be_err = |source| EngineError::Backend { rank, source };
        let batch = StepBatch::upload(be, inputs, counts.clone(), counts).map_err(be_err)?;
        if let Err(e) = be.begin_capture() {
            self.state = State::Eager { reason: e.to_string() };
            return Ok(());
        }
        let out = crate::step::forward_and_sample(be, model, &batch, kv);
        let graph = be.end_capture();
        match (out, graph) {
            (Ok(ids), Ok(graph)) => {
                tracing::debug!(rank, ops = graph.ops(), "captured the decode step");
                self.state = State::Ready { batch: Box::new(batch), ids, graph, kv_id: std::ptr::from_ref(kv) as usize };
                Ok(())
            }
            (Err(e), _) => match unsupported(&e) {
                Some(reason) => {
                    tracing::info!(rank, %reason, "decode step not capturable; graph mode runs static shapes eagerly");
                    self.state = State::Eager { reason: reason.to_string() };
                    Ok(())
                }
                None => Err(EngineError::Model { rank, source: e }),
            },
            (Ok(_), Err(e)) => Err(be_err(e)),
        }
    }
}

/// The capture-refusal inside a forward error, if that is what it is.
fn unsupported(e: &ModelError) -> Option<&BackendError> {
    let b = match e {
        ModelError::Backend(b) | ModelError::Comm(CommError::Backend(b)) => b,
        ModelError::Layer(LayerError::Backend(b) | LayerError::Comm(CommError::Backend(b))) => b,
        _ => return None,
    };
    matches!(b, BackendError::Unsupported(_)).then_some(b)
}
