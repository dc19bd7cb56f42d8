//! The engine's two front ends over one rank loop (`rank_loop`): [`generate`] serves a batch
//! of requests known up front (`finetp run`, benchmarks, tests) and [`serve`] serves whatever
//! a [`Hub`] is given until it is closed (`finetp serve`). Both submit to a hub and run the
//! same loop on every rank, so offline and online generation share one path.

use std::sync::Arc;
use std::time::Instant;

use finetp_core::decoder::{CausalLm, KV_BLOCK_SIZE, ModuleBytes};
use finetp_core::plan::Plan;

use crate::EngineError;
use crate::graph::GraphReport;
use crate::hub::Hub;
use crate::launch::{Launcher, Rank};
use crate::rank_loop::{RankPlace, run_rank};
use crate::request::{Discard, Request, RequestOutput, Sink};

/// How steps are executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecMode {
    /// Real, uneven token counts every step (variable-size collectives).
    Eager,
    /// Decode steps padded to a static batch-size bucket on every rank, each bucket captured
    /// once as a graph and replayed (prefill steps, and steps that need logits on the host,
    /// stay eager: vLLM-Ascend's hybrid).
    Graph,
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub mode: ExecMode,
    /// KV-cache rows per sequence (prompt + generated tokens), at most.
    pub max_seq_len: usize,
    /// The token rows one step gives prompts on a rank (vLLM's `--max-num-batched-tokens`):
    /// every decoding sequence's next token first, then chunks of prompts in the room left (at
    /// least one row), so a long prompt is prefilled over several steps (chunked prefill) and a
    /// step runs at most `max(budget, decoding sequences + 1)` rows whatever the prompt length.
    pub max_num_batched_tokens: usize,
    /// Sequences one rank runs at once (vLLM's `--max-num-seqs`); `None`: a batch run's
    /// requests per replica, all at once.
    pub max_num_seqs: Option<usize>,
    /// KV-cache blocks (of [`KV_BLOCK_SIZE`] rows) in each rank's pool; `None`: what a batch
    /// run's requests need, each its prompt + `max_tokens`.
    pub kv_blocks: Option<usize>,
}

/// The default step budget: chunks of 512 prompt tokens, where this CPU's GEMMs are already at
/// their large-batch speed (llama.cpp's default micro-batch is 512 too).
pub const DEFAULT_MAX_NUM_BATCHED_TOKENS: usize = 512;

impl EngineConfig {
    /// `mode` and `max_seq_len`, with the default step budget, sized for a batch run.
    pub fn new(mode: ExecMode, max_seq_len: usize) -> Self {
        Self { mode, max_seq_len, max_num_batched_tokens: DEFAULT_MAX_NUM_BATCHED_TOKENS, max_num_seqs: None, kv_blocks: None }
    }
}

/// What one rank measured.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RankReport {
    pub rank: usize,
    pub weight_bytes: Vec<ModuleBytes>,
    pub kv_cache_bytes: usize,
    /// Steps that ran rows somewhere in the world (this rank's dummy steps included).
    pub steps: usize,
    /// Wall time of each step in which no rank prefilled (seconds).
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

/// Runs `requests` over the DP replicas of `plan`, started by `launcher`; request `i` is served
/// by DP replica `i % DP` (the hub's least-loaded choice for a batch submitted at once: vLLM's
/// round-robin), on each of its TP ranks. `load` loads a rank's model shard on its device and
/// groups. Any rank's failure fails the run with that rank's error (the others see a peer
/// failure or a timeout, never a hang).
///
/// # Errors
/// [`EngineError::Config`] for a layout the engine does not run (PP > 1) or a request that
/// does not fit, before any rank starts; otherwise the failing rank's error.
pub fn generate<B, L>(launcher: &Launcher, plan: &Plan, cfg: &EngineConfig, requests: &[Request], load: L) -> Result<GenerationReport, EngineError>
where
    B: finetp_core::backend::Device,
    L: Fn(&Rank<B>) -> Result<Box<dyn CausalLm<B>>, EngineError> + Sync,
{
    check(plan, cfg)?;
    let dp = plan.parallel.data_parallel_size;
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
    // Each replica runs all of its requests at once, in a pool of exactly the blocks they need.
    let replica_of = |rank: usize| requests.iter().skip(rank).step_by(dp);
    let capacity = (0..dp).map(|r| replica_of(r).count()).max().unwrap_or(0);
    let blocks = (0..dp).map(|r| replica_of(r).map(|q| (q.prompt.len() + q.max_tokens).max(1).div_ceil(KV_BLOCK_SIZE)).sum()).max().unwrap_or(0);
    let mut cfg = cfg.clone();
    cfg.max_num_seqs = Some(cfg.max_num_seqs.unwrap_or(capacity).max(1));
    cfg.kv_blocks = Some(cfg.kv_blocks.unwrap_or(blocks).max(1));
    let hub = Hub::new(dp, plan.parallel.tensor_parallel_size, usize::MAX);
    let sink: Sink = Arc::new(Discard);
    for r in requests {
        hub.submit(r.clone(), sink.clone()).map_err(|e| EngineError::Config(format!("request {}: {e}", r.id)))?;
    }
    hub.close();
    let fingerprint = crate::agree::run_fingerprint(&cfg, capacity, 0, requests);
    let start = Instant::now();
    let per_rank = run_engine(launcher, plan, &cfg, &hub, fingerprint, true, load)?;
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

/// Serves what `hub` is given (a hub made for `plan`'s DP and TP sizes) until it is closed and
/// every request has finished; requests' events go to the sinks they were submitted with.
/// Ranks must be threads of this process (`launcher` of [`Launcher::threads`]): the hub is
/// shared memory. `cfg.max_num_seqs` and `cfg.kv_blocks` size each rank's batch and pool.
///
/// # Errors
/// As [`generate`]; the hub is failed too, so its submitters learn of it.
pub fn serve<B, L>(launcher: &Launcher, plan: &Plan, cfg: &EngineConfig, hub: &Hub, load: L) -> Result<Vec<RankReport>, EngineError>
where
    B: finetp_core::backend::Device,
    L: Fn(&Rank<B>) -> Result<Box<dyn CausalLm<B>>, EngineError> + Sync,
{
    check(plan, cfg)?;
    if !launcher.runs_any_world() {
        return Err(EngineError::Config("serving runs the ranks as threads of one process; under mpirun use `finetp run`".into()));
    }
    if cfg.max_num_seqs.is_none() || cfg.kv_blocks.is_none() {
        return Err(EngineError::Config("serving needs max_num_seqs and kv_blocks".into()));
    }
    let fingerprint = crate::agree::run_fingerprint(cfg, 0, 0, &[]);
    let per_rank = run_engine(launcher, plan, cfg, hub, fingerprint, false, load).inspect_err(|e| hub.fail(&e.to_string()))?;
    Ok(per_rank.into_iter().map(|(_, r)| r).collect())
}

fn check(plan: &Plan, cfg: &EngineConfig) -> Result<(), EngineError> {
    plan.parallel.check_runnable().map_err(|e| EngineError::Config(e.to_string()))?;
    if cfg.max_num_batched_tokens == 0 {
        return Err(EngineError::Config("max_num_batched_tokens must be at least 1".into()));
    }
    Ok(())
}

/// Every rank's loop; a rank that fails (or panics) fails the hub, so ranks waiting in it
/// for work end too.
fn run_engine<B, L>(launcher: &Launcher, plan: &Plan, cfg: &EngineConfig, hub: &Hub, fingerprint: u64, collect: bool, load: L) -> Result<Vec<(Vec<RequestOutput>, RankReport)>, EngineError>
where
    B: finetp_core::backend::Device,
    L: Fn(&Rank<B>) -> Result<Box<dyn CausalLm<B>>, EngineError> + Sync,
{
    let dp = plan.parallel.data_parallel_size;
    launcher.run_gathered(plan, |rank: Rank<B>| {
        let guard = FailOnDrop(hub, rank.rank);
        let coord = plan.coord(rank.rank);
        let place = RankPlace { rank: rank.rank, replica: coord.dp, tp_rank: coord.tp, ranks_per_replica: plan.world_size() / dp };
        let model = load(&rank)?;
        let out = run_rank(place, cfg, hub, fingerprint, collect, &rank.be, &rank.groups, &*model);
        if out.is_ok() {
            std::mem::forget(guard);
        }
        out
    })
}

/// Fails the hub when a rank's body ends without success (an error or a panic).
struct FailOnDrop<'a>(&'a Hub, usize);

impl Drop for FailOnDrop<'_> {
    fn drop(&mut self) {
        self.0.fail(&format!("rank {} failed", self.1));
    }
}
