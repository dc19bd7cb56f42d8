//! The rank loop: every rank is a thread that owns its device, model shard, requests and KV
//! cache, and steps in lock-step with the others. The TP ranks of one replica serve the same
//! requests (each runs its heads and its parts of every layer) and sample the same tokens from
//! the same logits.

use std::time::Instant;

use finetp_core::backend::{BackendError, CommError, DType, Device, HostTensor};
use finetp_core::decoder::{CausalLm, KV_BLOCK_SIZE, KvLayout, ModuleBytes, StepInputs};
use finetp_core::parallel::{GroupSet, StepCounts};
use finetp_core::plan::Plan;

use crate::EngineError;
use crate::graph::{DecodeGraph, GraphReport};
use crate::launch::{Launcher, Rank};
use crate::request::{Request, RequestOutput};
use crate::sampling::Sampler;
use crate::step::eager_step;

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
    pub mode: ExecMode,
    /// KV-cache rows per sequence (prompt + generated tokens).
    pub max_seq_len: usize,
    /// The token rows one step gives prompts on a rank (vLLM's `--max-num-batched-tokens`):
    /// every decoding sequence's next token first, then chunks of prompts in the room left (at
    /// least one row), so a long prompt is prefilled over several steps (chunked prefill) and a
    /// step runs at most `max(budget, decoding sequences + 1)` rows whatever the prompt length.
    pub max_num_batched_tokens: usize,
}

/// The default step budget: chunks of 512 prompt tokens, where this CPU's GEMMs are already at
/// their large-batch speed (llama.cpp's default micro-batch is 512 too).
pub const DEFAULT_MAX_NUM_BATCHED_TOKENS: usize = 512;

impl EngineConfig {
    /// `mode` and `max_seq_len`, with the default step budget.
    pub fn new(mode: ExecMode, max_seq_len: usize) -> Self {
        Self { mode, max_seq_len, max_num_batched_tokens: DEFAULT_MAX_NUM_BATCHED_TOKENS }
    }
}

/// What one rank measured.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
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
    /// Tokens in its KV cache: prompt tokens prefilled so far, then generated ones.
    past: usize,
    generated: Vec<u32>,
    sampler: Sampler,
    ttft_s: Option<f64>,
    done: bool,
}

/// Runs `requests` over the DP replicas of `plan`, started by `launcher`; request `i` is served
/// by DP replica `i % DP` (vLLM's round-robin), on each of its TP ranks. `load` loads a rank's model shard on its device and
/// groups. Any rank's failure fails the run with that rank's error (the others see a peer
/// failure or a timeout, never a hang).
///
/// # Errors
/// [`EngineError::Config`] for a layout the engine does not run (PP > 1) or a request that
/// does not fit, before any rank starts; otherwise the failing rank's error.
pub fn generate<B, L>(launcher: &Launcher, plan: &Plan, cfg: &EngineConfig, requests: &[Request], load: L) -> Result<GenerationReport, EngineError>
where
    B: Device,
    L: Fn(&Rank<B>) -> Result<Box<dyn CausalLm<B>>, EngineError> + Sync,
{
    let p = &plan.parallel;
    p.check_runnable().map_err(|e| EngineError::Config(e.to_string()))?;
    if cfg.max_num_batched_tokens == 0 {
        return Err(EngineError::Config("max_num_batched_tokens must be at least 1".into()));
    }
    let dp = p.data_parallel_size;
    for r in requests {
        if r.prompt.is_empty() {
            return Err(EngineError::Config(format!("request {} has an empty prompt", r.id)));
        }
        if r.prompt.len().checked_add(r.max_tokens).is_none_or(|n| n > cfg.max_seq_len) {
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
    let per_rank = launcher.run_gathered(plan, |rank: Rank<B>| {
        let replica = plan.coord(rank.rank).dp;
        let mine: Vec<Request> = requests.iter().skip(replica).step_by(dp).cloned().collect();
        let model = load(&rank)?;
        run_rank(RankPlace { rank: rank.rank, replica, ranks_per_replica: plan.world_size() / dp }, cfg, capacity, requests, &rank.be, &rank.groups, &*model, mine)
    })?;
    let mut outputs = Vec::new();
    let mut ranks = Vec::new();
    for (rank, (o, rep)) in per_rank.into_iter().enumerate() {
        // A replica's TP ranks produce the same tokens: report them once, from TP rank 0.
        if plan.coord(rank).tp == 0 {
            outputs.extend(o);
        }
        ranks.push(rep);
    }
    outputs.sort_by_key(|o| o.id);
    Ok(GenerationReport { outputs, ranks, total_s: start.elapsed().as_secs_f64() })
}

/// Where a rank sits: its global rank, its DP replica, and how many ranks a replica has.
#[derive(Clone, Copy)]
struct RankPlace {
    rank: usize,
    replica: usize,
    ranks_per_replica: usize,
}

#[allow(clippy::too_many_arguments)]
fn run_rank<B: Device>(
    place: RankPlace,
    cfg: &EngineConfig,
    capacity: usize,
    all_requests: &[Request],
    be: &B,
    groups: &GroupSet<B>,
    model: &dyn CausalLm<B>,
    mine: Vec<Request>,
) -> Result<(Vec<RequestOutput>, RankReport), EngineError> {
    let RankPlace { rank, replica, ranks_per_replica: rpr } = place;
    let model_err = |source| EngineError::Model { rank, source };
    let comm_err = |source| EngineError::Comm { rank, source };
    let layout = KvLayout::reserved(mine.len(), cfg.max_seq_len, KV_BLOCK_SIZE)
        .ok_or_else(|| EngineError::Run { rank, detail: format!("a KV cache of {} sequences x {} tokens overflows", mine.len(), cfg.max_seq_len) })?;
    let table = layout.reserved_table();
    let mut kv = model.new_kv_cache(be, layout).map_err(model_err)?;
    let mut seqs: Vec<Seq> = mine
        .into_iter()
        .enumerate()
        .map(|(slot, req)| {
            let done = req.max_tokens == 0;
            Seq { sampler: Sampler::new(req.sampling, req.id), req, slot, past: 0, generated: vec![], ttft_s: None, done }
        })
        .collect();
    agree_on_the_run(be, groups, run_fingerprint(cfg, capacity, model.vocab_size(), all_requests)).map_err(|e| match e {
        EngineError::Comm { source, .. } => EngineError::Comm { rank, source },
        e => e,
    })?;
    tracing::info!("rank {rank}: weights loaded and the run agreed; generating");
    let start = Instant::now();
    let mut report =
        RankReport { rank, weight_bytes: model.weight_bytes(), kv_cache_bytes: kv.bytes(), steps: 0, decode_step_s: vec![], graph: None };
    // Declared after `kv` and `model` is borrowed for the whole loop: the graph, which points
    // into both, is dropped first.
    let mut graph = DecodeGraph::new(cfg.mode == ExecMode::Graph);
    loop {
        let t0 = Instant::now();
        let local = LocalStep::build(&mut seqs, &table, layout.max_blocks, cfg.max_num_batched_tokens);
        let world = exchange_meta(be, groups, &local).map_err(comm_err)?;
        // No rows anywhere: every sequence is done. (A step may run rows and sample none,
        // when each of them is a prompt chunk that does not end its prompt.)
        if world.tokens.iter().all(|&n| n == 0) {
            break;
        }
        let dp = world.tokens.len();
        let ids = if cfg.mode == ExecMode::Graph && !world.any_prefill {
            // Static shapes: every rank runs `capacity` rows and logit rows.
            let mut inputs = local.inputs;
            inputs.pad_to(capacity, capacity);
            let counts = StepCounts::uniform(dp, capacity, rpr);
            graph.step(rank, be, model, &mut kv, &inputs, counts)?
        } else {
            let (tokens, logits) = (StepCounts::new(world.tokens.clone(), rpr), StepCounts::new(world.logits.clone(), rpr));
            eager_step(rank, be, model, &mut kv, &local.inputs, tokens, logits)?
        };
        for &(i, rows) in &local.chunks {
            seqs[i].past += rows;
        }
        for (&i, &tok) in local.sampled.iter().zip(&ids) {
            let seq = &mut seqs[i];
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
        .map(|s| RequestOutput { id: s.req.id, rank: replica, tokens: s.generated, ttft_s: s.ttft_s.unwrap_or(0.0) })
        .collect();
    Ok((outputs, report))
}

/// This rank's rows for the next step, before padding.
struct LocalStep {
    inputs: StepInputs,
    prefill: bool,
    /// `(sequence, rows)` for every sequence in the step: how far its cache advances.
    chunks: Vec<(usize, usize)>,
    /// The sequences whose logits are sampled this step, in logit-row order.
    sampled: Vec<usize>,
}

impl LocalStep {
    /// The next rows within `budget` token rows: every decoding sequence's last token, then
    /// prompt chunks in order in the room left (at least one row, so a prompt always advances).
    /// A sequence is sampled, with a fresh draw of its generator, only when its rows end its
    /// prompt or it decodes, so chunking never changes which draws a sequence makes.
    fn build(seqs: &mut [Seq], table: &[u32], max_blocks: usize, budget: usize) -> Self {
        let mut s = LocalStep { inputs: StepInputs::new(table.to_vec(), max_blocks), prefill: false, chunks: vec![], sampled: vec![] };
        let decoding = |q: &Seq| !q.done && q.past >= q.req.prompt.len();
        for (i, q) in seqs.iter_mut().enumerate().filter(|(_, q)| decoding(q)) {
            let toks = &q.generated[q.generated.len() - 1..];
            s.inputs.push_sequence(q.slot, toks, q.past, Some(q.sampler.next_params()));
            s.chunks.push((i, 1));
            s.sampled.push(i);
        }
        let mut room = budget.saturating_sub(s.inputs.rows()).max(1);
        for (i, q) in seqs.iter_mut().enumerate().filter(|(_, q)| !q.done && q.past < q.req.prompt.len()) {
            if room == 0 {
                break;
            }
            let end = (q.past + room).min(q.req.prompt.len());
            let last = end == q.req.prompt.len();
            s.inputs.push_sequence(q.slot, &q.req.prompt[q.past..end], q.past, last.then(|| q.sampler.next_params()));
            s.prefill = true;
            s.chunks.push((i, end - q.past));
            if last {
                s.sampled.push(i);
            }
            room -= end - q.past;
        }
        s
    }
}

/// What every rank learns about the world each step.
struct WorldStep {
    tokens: Vec<usize>,
    logits: Vec<usize>,
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
        logits: v.chunks(3).map(|c| c[1] as usize).collect(),
        any_prefill: v.chunks(3).any(|c| c[2] != 0),
        tokens,
    })
}

/// A hash of everything every rank of a run must agree on: the engine config, the static
/// capacity, the vocabulary and every request. Ranks that are processes each parse their own
/// flags and files, so a mismatch is caught here rather than as corrupt collectives.
fn run_fingerprint(cfg: &EngineConfig, capacity: usize, vocab: usize, requests: &[Request]) -> u64 {
    // FNV-1a over a fixed serialisation: the same on every host.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |x: u64| {
        for b in x.to_le_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(u64::from(cfg.mode == ExecMode::Graph));
    eat(cfg.max_seq_len as u64);
    eat(cfg.max_num_batched_tokens as u64);
    eat(capacity as u64);
    eat(vocab as u64);
    for r in requests {
        eat(r.id as u64);
        eat(r.max_tokens as u64);
        r.prompt.iter().for_each(|&t| eat(u64::from(t)));
        r.stop_ids.iter().for_each(|&t| eat(u64::from(t)));
        eat(u64::from(r.sampling.temperature.to_bits()) << 32 | u64::from(r.sampling.top_p.to_bits()));
        eat(u64::from(r.sampling.top_k) << 32 ^ r.sampling.seed);
    }
    h
}

/// Every rank compares its fingerprint with member 0's of its DP group and then of its TP
/// group (two broadcasts: together they link the whole world), and the run starts only if all
/// agree; it is also the start line every rank leaves together.
fn agree_on_the_run<B: Device>(be: &B, groups: &GroupSet<B>, fingerprint: u64) -> Result<(), EngineError> {
    for group in [&groups.dp, &groups.tp] {
        agree_in(be, &**group, fingerprint)?;
    }
    Ok(())
}

fn agree_in<B: Device>(be: &B, group: &dyn finetp_core::backend::Collective<B>, fingerprint: u64) -> Result<(), EngineError> {
    let comm = |source: CommError| EngineError::Comm { rank: group.info().global_rank(), source };
    let mine = [fingerprint as u32, (fingerprint >> 32) as u32];
    let mut t = be.upload(&HostTensor::u32(mine.to_vec(), &[2]).map_err(|e| comm(e.into()))?).map_err(|e| comm(e.into()))?;
    group.broadcast(&mut t, 0).map_err(comm)?;
    let theirs = be.download(&t).map_err(|e| comm(e.into()))?;
    if theirs.data != finetp_core::backend::HostData::U32(mine.to_vec()) {
        let g = group.info();
        return Err(EngineError::Run {
            rank: g.global_rank(),
            detail: format!("it and rank {} were started with different requests, model or flags (every rank of a run must get the same)", g.global_rank_of(0)),
        });
    }
    Ok(())
}
