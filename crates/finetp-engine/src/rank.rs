//! The rank loop: every DP rank is a thread that owns its device, model shard, requests and KV
//! cache, and steps in lock-step with the others.

use std::time::{Duration, Instant};

use finetp_core::backend::{BackendError, CommError, DType, Device, HostTensor};
use finetp_core::decoder::{CausalLm, KvCache, ModelError, ModuleBytes, StepBatch, StepInputs};
use finetp_core::parallel::{GroupSet, StepCounts};

use crate::graph::{DecodeGraph, GraphReport};

use crate::request::{Request, RequestOutput};
use crate::sampling::Sampler;

/// How steps are executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecMode {
    /// Real, uneven token counts every step (variable-size collectives).
    Eager,
    /// Decode steps padded to a static capacity on every rank, captured once as a graph and
    /// replayed (prefill steps stay eager, as vLLM's `FULL_DECODE_ONLY`).
    Graph,
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub data_parallel_size: usize,
    /// Ranks per DP replica (PP × TP); 1 for pure DP.
    pub ranks_per_replica: usize,
    pub mode: ExecMode,
    /// KV-cache rows per sequence (prompt + generated tokens).
    pub max_seq_len: usize,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error("rank {rank}: {source}")]
    Model { rank: usize, source: ModelError },
    #[error("rank {rank}: {source}")]
    Comm { rank: usize, source: CommError },
    #[error("rank {rank}: {source}")]
    Backend { rank: usize, source: BackendError },
    #[error("rank {rank}: graph replay failed: {source}")]
    Replay { rank: usize, source: finetp_core::backend::ReplayError },
    #[error("rank {rank}: setup failed: {message}")]
    Setup { rank: usize, message: String },
    #[error("rank {rank} panicked: {message}")]
    Panicked { rank: usize, message: String },
    #[error("{0}")]
    Config(String),
}

impl EngineError {
    /// Errors that only echo another rank's failure; the report prefers a root cause.
    fn is_echo(&self) -> bool {
        matches!(self, EngineError::Comm { source: CommError::PeerFailed { .. }, .. })
            || matches!(self, EngineError::Model { source: ModelError::Comm(CommError::PeerFailed { .. }), .. })
            || matches!(
                self,
                EngineError::Model { source: ModelError::Layer(finetp_core::layers::LayerError::Comm(CommError::PeerFailed { .. })), .. }
            )
    }
}

/// What one rank measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RankReport {
    pub rank: usize,
    pub weight_bytes: Vec<ModuleBytes>,
    pub kv_cache_bytes: usize,
    pub steps: usize,
    /// Wall time of each step in which every rank decoded (seconds).
    pub decode_step_s: Vec<f64>,
    /// Graph mode: what was captured and replayed, or why decode ran eagerly.
    pub graph: Option<GraphReport>,
}

/// Everything a generation run produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GenerationReport {
    pub outputs: Vec<RequestOutput>,
    pub ranks: Vec<RankReport>,
    pub total_s: f64,
}

impl GenerationReport {
    /// Median decode-step time over every rank's decode steps: the time per output token.
    pub fn tpot_s(&self) -> Option<f64> {
        let mut all: Vec<f64> = self.ranks.iter().flat_map(|r| r.decode_step_s.iter().copied()).collect();
        all.sort_by(f64::total_cmp);
        all.get(all.len() / 2).copied()
    }
}

/// One sequence being generated on a rank.
struct Seq {
    req: Request,
    slot: usize,
    past: usize,
    generated: Vec<u32>,
    sampler: Sampler,
    ttft_s: Option<f64>,
    done: bool,
}

/// Runs `requests` over `cfg.data_parallel_size` ranks; request `i` is served by DP rank
/// `i % DP` (vLLM's round-robin). `setup(rank)` opens the rank's device and communicators;
/// `load` loads its model shard. Any rank's failure fails the run with that rank's error (the
/// others see a peer failure or a timeout, never a hang).
pub fn generate<B, S, L>(cfg: &EngineConfig, requests: &[Request], setup: S, load: L) -> Result<GenerationReport, EngineError>
where
    B: Device,
    S: Fn(usize) -> Result<(B, GroupSet<B>), EngineError> + Sync,
    L: Fn(usize, &B, &GroupSet<B>) -> Result<Box<dyn CausalLm<B>>, EngineError> + Sync,
{
    let dp = cfg.data_parallel_size;
    if dp == 0 {
        return Err(EngineError::Config("data-parallel size must be >= 1".into()));
    }
    for r in requests {
        if r.prompt.is_empty() {
            return Err(EngineError::Config(format!("request {} has an empty prompt", r.id)));
        }
        if r.prompt.len() + r.max_tokens > cfg.max_seq_len {
            return Err(EngineError::Config(format!(
                "request {}: prompt of {} tokens + {} new tokens exceeds the maximum sequence length {}",
                r.id,
                r.prompt.len(),
                r.max_tokens,
                cfg.max_seq_len
            )));
        }
    }
    let capacity = (0..dp).map(|rank| requests.iter().skip(rank).step_by(dp).count()).max().unwrap_or(0);
    let start = Instant::now();
    let results: Vec<Result<(Vec<RequestOutput>, RankReport), EngineError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..dp)
            .map(|rank| {
                let mine: Vec<Request> = requests.iter().skip(rank).step_by(dp).cloned().collect();
                let (setup, load) = (&setup, &load);
                std::thread::Builder::new()
                    .name(format!("finetp-rank-{rank}"))
                    .spawn_scoped(s, move || {
                        let (be, groups) = setup(rank)?;
                        let model = load(rank, &be, &groups)?;
                        run_rank(rank, cfg, capacity, &be, &groups, &*model, mine)
                    })
                    .map_err(|e| EngineError::Setup { rank, message: format!("cannot spawn thread: {e}") })
            })
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(rank, h)| match h {
                Ok(h) => h.join().unwrap_or_else(|p| Err(EngineError::Panicked { rank, message: panic_message(&p) })),
                Err(e) => Err(e),
            })
            .collect()
    });
    let mut outputs = Vec::new();
    let mut ranks = Vec::new();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok((o, rep)) => {
                outputs.extend(o);
                ranks.push(rep);
            }
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        let root = errors.iter().position(|e| !e.is_echo()).unwrap_or(0);
        return Err(errors.swap_remove(root));
    }
    outputs.sort_by_key(|o| o.id);
    Ok(GenerationReport { outputs, ranks, total_s: start.elapsed().as_secs_f64() })
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_default()
}

fn run_rank<B: Device>(
    rank: usize,
    cfg: &EngineConfig,
    capacity: usize,
    be: &B,
    groups: &GroupSet<B>,
    model: &dyn CausalLm<B>,
    mine: Vec<Request>,
) -> Result<(Vec<RequestOutput>, RankReport), EngineError> {
    let model_err = |source| EngineError::Model { rank, source };
    let comm_err = |source| EngineError::Comm { rank, source };
    let mut kv = model.new_kv_cache(be, mine.len().max(1), cfg.max_seq_len).map_err(model_err)?;
    let mut seqs: Vec<Seq> = mine
        .into_iter()
        .enumerate()
        .map(|(slot, req)| Seq { sampler: Sampler::new(req.sampling, req.id), req, slot, past: 0, generated: vec![], ttft_s: None, done: false })
        .collect();
    groups.dp.barrier().map_err(comm_err)?;
    let start = Instant::now();
    let mut report =
        RankReport { rank, weight_bytes: model.weight_bytes(), kv_cache_bytes: kv.bytes(), steps: 0, decode_step_s: vec![], graph: None };
    let vocab = model.vocab_size();
    // Declared after `kv` and `model` is borrowed for the whole loop: the graph, which points
    // into both, is dropped first.
    let mut graph = DecodeGraph::new(cfg.mode == ExecMode::Graph);
    loop {
        let t0 = Instant::now();
        let local = LocalStep::build(&seqs);
        let world = exchange_meta(be, groups, &local).map_err(comm_err)?;
        if world.active == 0 {
            break;
        }
        let dp = world.tokens.len();
        let rpr = cfg.ranks_per_replica;
        let host = if cfg.mode == ExecMode::Graph && !world.any_prefill {
            // Static shapes: every rank runs `capacity` rows and logit rows.
            let mut inputs = local.inputs;
            inputs.pad_to(capacity, capacity);
            let counts = StepCounts::uniform(dp, capacity, rpr);
            graph.step(rank, be, model, &mut kv, &inputs, counts)?
        } else {
            let (tokens, logits) = (StepCounts::new(world.tokens.clone(), rpr), StepCounts::new(world.logits.clone(), rpr));
            eager_step(rank, be, model, &mut kv, &local.inputs, tokens, logits)?
        };
        let host = host.to_f32_vec().unwrap_or_default();
        for (i, seq) in seqs.iter_mut().filter(|s| !s.done).enumerate() {
            let tok = seq.sampler.sample(&host[i * vocab..(i + 1) * vocab]);
            seq.past += if seq.past == 0 { seq.req.prompt.len() } else { 1 };
            seq.generated.push(tok);
            seq.ttft_s.get_or_insert(start.elapsed().as_secs_f64());
            seq.done = seq.generated.len() >= seq.req.max_tokens || seq.req.stop_ids.contains(&tok);
        }
        report.steps += 1;
        if !world.any_prefill {
            report.decode_step_s.push(t0.elapsed().as_secs_f64());
        }
    }
    report.graph = graph.report();
    drop(graph);
    let outputs = seqs
        .into_iter()
        .map(|s| RequestOutput { id: s.req.id, rank, tokens: s.generated, ttft_s: s.ttft_s.unwrap_or(0.0) })
        .collect();
    Ok((outputs, report))
}

/// One step run as issued: upload `inputs`, forward, download the logits.
pub(crate) fn eager_step<B: Device>(
    rank: usize,
    be: &B,
    model: &dyn CausalLm<B>,
    kv: &mut KvCache<B>,
    inputs: &StepInputs,
    token_counts: StepCounts,
    logit_counts: StepCounts,
) -> Result<HostTensor, EngineError> {
    let be_err = |source| EngineError::Backend { rank, source };
    let batch = StepBatch::upload(be, inputs, token_counts, logit_counts).map_err(be_err)?;
    let logits = model.forward(be, &batch, kv).map_err(|source| EngineError::Model { rank, source })?;
    be.download(&logits).map_err(be_err)
}

/// This rank's rows for the next step, before padding.
struct LocalStep {
    inputs: StepInputs,
    prefill: bool,
}

impl LocalStep {
    fn build(seqs: &[Seq]) -> Self {
        let mut s = LocalStep { inputs: StepInputs::default(), prefill: false };
        for q in seqs.iter().filter(|q| !q.done) {
            let toks: &[u32] = if q.past == 0 { &q.req.prompt } else { &q.generated[q.generated.len() - 1..] };
            s.prefill |= q.past == 0;
            s.inputs.push_sequence(q.slot, toks, q.past);
        }
        s
    }
}

/// What every rank learns about the world each step.
struct WorldStep {
    tokens: Vec<usize>,
    logits: Vec<usize>,
    active: usize,
    any_prefill: bool,
}

/// One all-gather of `[tokens, logit rows, prefill]` over the DP group.
fn exchange_meta<B: Device>(be: &B, groups: &GroupSet<B>, local: &LocalStep) -> Result<WorldStep, CommError> {
    let dp = groups.dp.info().size();
    let (rows, logits) = (local.inputs.rows() as u32, local.inputs.logit_rows.len() as u32);
    let mine = be.upload(&HostTensor::u32(vec![rows, logits, u32::from(local.prefill)], &[1, 3])?)?;
    let mut all = be.zeros(&[dp, 3], DType::U32)?;
    groups.dp.all_gather(&mine, &vec![1; dp], &mut all)?;
    let HostTensor { data: finetp_core::backend::HostData::U32(v), .. } = be.download(&all)? else {
        return Err(CommError::Backend(BackendError::Unsupported("metadata must be u32".into())));
    };
    let tokens: Vec<usize> = v.chunks(3).map(|c| c[0] as usize).collect();
    Ok(WorldStep {
        active: v.chunks(3).map(|c| c[1] as usize).sum(),
        logits: v.chunks(3).map(|c| c[1] as usize).collect(),
        any_prefill: v.chunks(3).any(|c| c[2] != 0),
        tokens,
    })
}

/// Default collective timeout for engine runs.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
