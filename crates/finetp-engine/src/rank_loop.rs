//! The rank loop: every rank is a thread that owns its device, model shard, running sequences
//! and KV-cache pool, and steps in lock-step with the others. Between steps it takes its
//! replica's new requests and cancellations from the [`Hub`], admits what its pool holds, and
//! reports tokens back. The TP ranks of one replica serve the same requests (each runs its
//! heads and its parts of every layer) and sample the same tokens from the same logits.
//!
//! Every step the ranks exchange their row counts and a few flags on the DP group (one small
//! all-gather, as vLLM does); every rank, busy or idle, then runs the same forward — an idle
//! rank's is a dummy step of zero rows — so each component's collectives stay in lock-step.
//! When no rank has rows, the ranks end (the hub closed on every rank's view and nothing
//! waiting) or wait in the hub for the next submission, each for at most `IDLE_WAIT`, so no
//! rank waits outside a collective for a change its peers have already seen.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use finetp_core::backend::{BackendError, CommError, DType, Device, HostData, HostTensor};
use finetp_core::decoder::{CausalLm, KV_BLOCK_SIZE, KvLayout, StepInputs};
use finetp_core::parallel::{GroupSet, StepCounts};

use crate::graph::DecodeGraphs;
use crate::hub::{Hub, RankMemory, Snapshot};
use crate::kv_pool::BlockPool;
use crate::logits::{HostLogits, logprob, penalty_adjustments};
use crate::request::{Event, FinishReason, Request, RequestOutput, TokenLogprob};
use crate::sampling::Sampler;
use crate::step::eager_step;
use crate::{EngineConfig, EngineError, ExecMode, RankReport};

/// Where a rank sits: its global rank, its DP replica, its rank inside the replica, and how
/// many ranks a replica has.
#[derive(Clone, Copy)]
pub(crate) struct RankPlace {
    pub rank: usize,
    pub replica: usize,
    pub tp_rank: usize,
    pub ranks_per_replica: usize,
}

/// One sequence running on a rank.
struct Seq {
    req: Arc<Request>,
    slot: usize,
    /// Tokens in its KV cache: prompt tokens prefilled so far, then generated ones.
    past: usize,
    generated: Vec<u32>,
    sampler: Sampler,
    ttft_s: Option<f64>,
    done: Option<FinishReason>,
    /// Prompt log-probabilities gathered over its prefill chunks (when asked for).
    prompt_logprobs: Vec<Option<TokenLogprob>>,
}

impl Seq {
    fn decoding(&self) -> bool {
        self.done.is_none() && self.past >= self.req.prompt.len()
    }
}

/// The loop of one rank (see the module doc). Returns the outputs of the requests it served
/// (when `collect`: a batch run; a server's go to their sinks only) and its report.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_rank<B: Device>(
    place: RankPlace,
    cfg: &EngineConfig,
    hub: &Hub,
    fingerprint: u64,
    collect: bool,
    be: &B,
    groups: &GroupSet<B>,
    model: &dyn CausalLm<B>,
) -> Result<(Vec<RequestOutput>, RankReport), EngineError> {
    let RankPlace { rank, replica, tp_rank, ranks_per_replica: rpr } = place;
    let model_err = |source| EngineError::Model { rank, source };
    let comm_err = |source| EngineError::Comm { rank, source };
    let (slots, blocks) = (cfg.max_num_seqs.unwrap_or(1).max(1), cfg.kv_blocks.unwrap_or(1).max(1));
    let layout = KvLayout { blocks, block_size: KV_BLOCK_SIZE, slots, max_blocks: cfg.max_seq_len.max(1).div_ceil(KV_BLOCK_SIZE) };
    let mut pool = BlockPool::new(layout);
    let mut kv = model.new_kv_cache(be, layout).map_err(model_err)?;
    crate::agree::agree_on_the_run(be, groups, fingerprint ^ (model.vocab_size() as u64).rotate_left(17)).map_err(|e| match e {
        EngineError::Comm { source, .. } => EngineError::Comm { rank, source },
        e => e,
    })?;
    tracing::info!("rank {rank}: weights loaded and the run agreed; serving");
    let weight_bytes = model.weight_bytes();
    let kv_cache_bytes = kv.bytes();
    let held: usize = weight_bytes.iter().map(|m| m.bytes).sum();
    let mem = |pool: &BlockPool| RankMemory { weight_bytes: held, kv_cache_bytes, kv_blocks: blocks, kv_blocks_used: pool.used_blocks() };
    hub.rank_memory(rank, mem(&pool));
    let emits = tp_rank == 0;
    let start = Instant::now();
    let mut report = RankReport { rank, weight_bytes: weight_bytes.clone(), kv_cache_bytes, steps: 0, decode_step_s: vec![], graph: None };
    let mut outputs = Vec::new();
    let mut waiting: VecDeque<Arc<Request>> = VecDeque::new();
    let mut seqs: Vec<Seq> = Vec::new();
    // Declared after `kv` and `model` is borrowed for the whole loop: the graphs, which point
    // into both, are dropped first.
    let mut graphs = DecodeGraphs::new(cfg.mode == ExecMode::Graph, slots);
    loop {
        let t0 = Instant::now();
        let local_view = hub.snapshot(replica);
        let snap = if rpr > 1 { agree_in_replica(be, groups, local_view).map_err(comm_err)? } else { local_view };
        let (new, cancels) = hub.take(replica, tp_rank, &snap);
        waiting.extend(new);
        for id in cancels {
            if let Some(s) = seqs.iter_mut().find(|s| s.req.id == id && s.done.is_none()) {
                s.done = Some(FinishReason::Cancelled);
            } else if let Some(i) = waiting.iter().position(|r| r.id == id) {
                let r = waiting.remove(i).expect("found above");
                if emits {
                    hub.emit(id, finished(FinishReason::Cancelled, replica, &r, 0));
                }
            }
        }
        retire(&mut seqs, &mut pool, hub, emits, replica, collect.then_some(&mut outputs));
        admit(&mut waiting, &mut seqs, &mut pool, hub, emits, replica, collect.then_some(&mut outputs));
        let local = LocalStep::build(&mut seqs, pool.table(), layout.max_blocks, cfg.max_num_batched_tokens);
        let flags = Flags { prefill: local.prefill, host: local.host, closed: snap.closed, waiting: !waiting.is_empty() };
        let world = exchange_meta(be, groups, &local, flags).map_err(comm_err)?;
        if world.tokens.iter().all(|&n| n == 0) {
            if world.all_closed && !world.any_waiting {
                break;
            }
            if !hub.wait_change(snap.generation, crate::hub::IDLE_WAIT) {
                return Err(EngineError::Run { rank, detail: format!("stopped: {}", hub.failure().unwrap_or_default()) });
            }
            continue;
        }
        let dp = world.tokens.len();
        let (ids, host) = if world.any_host || world.any_prefill || cfg.mode == ExecMode::Eager {
            let (tokens, logits) = (StepCounts::new(world.tokens.clone(), rpr), StepCounts::new(world.logits.clone(), rpr));
            // Eager on every rank when any rank wants logits on the host (a graph keeps them on the
            // device); only the ranks that want them bring them back.
            eager_step(rank, be, model, &mut kv, &local.inputs, tokens, logits, local.host.then_some(&local.adjust[..]))?
        } else {
            // Static shapes: every rank runs the bucket's rows and logit rows.
            let bucket = graphs.bucket(world.tokens.iter().copied().max().unwrap_or(1));
            let mut inputs = local.inputs;
            inputs.pad_to(bucket, bucket);
            (graphs.of(bucket).step(rank, be, model, &mut kv, &inputs, StepCounts::uniform(dp, bucket, rpr))?, None)
        };
        for &(i, rows) in &local.chunks {
            seqs[i].past += rows;
        }
        for (k, (&use_, &tok)) in local.uses.iter().zip(&ids).enumerate() {
            let row = |k: usize| host.as_ref().map(|h: &HostLogits| h.row(k));
            match use_ {
                RowUse::Prompt { seq, next } => {
                    let s = &mut seqs[seq];
                    if let (Some(n), Some(r)) = (s.req.prompt_logprobs, row(k)) {
                        s.prompt_logprobs[next] = Some(logprob(r, s.req.prompt[next], n));
                    }
                }
                RowUse::Sample(i) => {
                    let s = &mut seqs[i];
                    s.ttft_s.get_or_insert(start.elapsed().as_secs_f64());
                    if s.generated.is_empty() && s.req.prompt_logprobs.is_some() && emits {
                        hub.emit(s.req.id, Event::PromptLogprobs(std::mem::take(&mut s.prompt_logprobs)));
                    }
                    if s.req.max_tokens == 0 {
                        s.done = Some(FinishReason::Length);
                        continue;
                    }
                    let lp = s.req.logprobs.and_then(|n| row(k).map(|r| logprob(r, tok, n)));
                    s.generated.push(tok);
                    if emits {
                        hub.emit(s.req.id, Event::Token { token: tok, logprob: lp });
                    }
                    if s.req.stop_ids.contains(&tok) {
                        s.done = Some(FinishReason::Stop);
                    } else if s.generated.len() >= s.req.max_tokens {
                        s.done = Some(FinishReason::Length);
                    }
                }
            }
        }
        report.steps += 1;
        if !world.any_prefill {
            report.decode_step_s.push(t0.elapsed().as_secs_f64());
        }
        retire(&mut seqs, &mut pool, hub, emits, replica, collect.then_some(&mut outputs));
        // Every rank reports its own pool (TP ranks of a replica hold the same blocks, but each
        // is its own row of `/metrics`).
        hub.rank_memory(rank, mem(&pool));
    }
    report.graph = graphs.report();
    drop(graphs);
    Ok((outputs, report))
}

fn finished(reason: FinishReason, replica: usize, req: &Request, completion_tokens: usize) -> Event {
    Event::Finished { reason, replica, prompt_tokens: req.prompt.len(), completion_tokens }
}

/// Moves waiting requests into the running set, first come first served, while a slot and
/// their blocks are free. A request no pool of this size could ever hold fails at once (the
/// server checks this before submitting); one asking for no tokens and no prompt
/// log-probabilities finishes at once.
fn admit(waiting: &mut VecDeque<Arc<Request>>, seqs: &mut Vec<Seq>, pool: &mut BlockPool, hub: &Hub, emits: bool, replica: usize, mut outputs: Option<&mut Vec<RequestOutput>>) {
    while let Some(req) = waiting.front() {
        let need = req.prompt.len() + req.max_tokens;
        if (req.max_tokens == 0 && req.prompt_logprobs.is_none()) || req.prompt.is_empty() || !pool.could_hold(need) {
            let req = waiting.pop_front().expect("front exists");
            let reason = if req.max_tokens == 0 && !req.prompt.is_empty() {
                FinishReason::Length
            } else {
                FinishReason::Failed(format!("{} tokens do not fit this rank's KV cache of {} blocks of {KV_BLOCK_SIZE}", need, pool.layout().blocks))
            };
            if emits {
                hub.emit(req.id, finished(reason, replica, &req, 0));
            }
            if let Some(o) = outputs.as_deref_mut() {
                o.push(RequestOutput { id: req.id, rank: replica, tokens: vec![], ttft_s: 0.0 });
            }
            continue;
        }
        let Some(slot) = pool.admit(need) else { break };
        let req = waiting.pop_front().expect("front exists");
        if emits {
            hub.admitted(req.id);
        }
        let stream = req.sample_stream.unwrap_or(req.id as u64);
        seqs.push(Seq {
            sampler: Sampler::new(req.sampling, stream),
            prompt_logprobs: if req.prompt_logprobs.is_some() { vec![None; req.prompt.len()] } else { vec![] },
            req,
            slot,
            past: 0,
            generated: vec![],
            ttft_s: None,
            done: None,
        });
    }
}

/// Ends the sequences that are done: their events, their outputs, their blocks back.
fn retire(seqs: &mut Vec<Seq>, pool: &mut BlockPool, hub: &Hub, emits: bool, replica: usize, outputs: Option<&mut Vec<RequestOutput>>) {
    let mut outputs = outputs;
    seqs.retain_mut(|s| {
        let Some(reason) = s.done.take() else { return true };
        pool.release(s.slot);
        if emits {
            hub.emit(s.req.id, finished(reason, replica, &s.req, s.generated.len()));
        }
        if let Some(o) = outputs.as_deref_mut() {
            o.push(RequestOutput { id: s.req.id, rank: replica, tokens: std::mem::take(&mut s.generated), ttft_s: s.ttft_s.unwrap_or(0.0) });
        }
        false
    });
}

/// What a logit row of a step is for.
#[derive(Clone, Copy)]
enum RowUse {
    /// The next token of sequence `.0`.
    Sample(usize),
    /// The log-probability of prompt token `next` of sequence `seq`.
    Prompt { seq: usize, next: usize },
}

/// This rank's rows for the next step, before padding.
struct LocalStep {
    inputs: StepInputs,
    prefill: bool,
    /// Whether any row needs its logits on the host (log-probabilities, penalties).
    host: bool,
    /// `(sequence, rows)` for every sequence in the step: how far its cache advances.
    chunks: Vec<(usize, usize)>,
    /// What each logit row is for, in logit-row order.
    uses: Vec<RowUse>,
    /// Per logit row: the subtractions of its sequence's penalties.
    adjust: Vec<Vec<(u32, f32)>>,
}

impl LocalStep {
    /// The next rows within `budget` token rows: every decoding sequence's last token, then
    /// prompt chunks in order in the room left (at least one row, so a prompt always advances).
    /// A sequence is sampled, with a fresh draw of its generator, only when its rows end its
    /// prompt or it decodes, so chunking never changes which draws a sequence makes.
    fn build(seqs: &mut [Seq], table: &[u32], max_blocks: usize, budget: usize) -> Self {
        let mut s = LocalStep { inputs: StepInputs::new(table.to_vec(), max_blocks), prefill: false, host: false, chunks: vec![], uses: vec![], adjust: vec![] };
        for (i, q) in seqs.iter_mut().enumerate().filter(|(_, q)| q.decoding()) {
            let toks = &q.generated[q.generated.len() - 1..];
            s.inputs.push_sequence(q.slot, toks, q.past, Some(q.sampler.next_params()));
            s.chunks.push((i, 1));
            s.uses.push(RowUse::Sample(i));
            s.adjust.push(penalty_adjustments(q.req.penalties, &q.generated));
            s.host |= q.req.needs_host_logits();
        }
        let mut room = budget.saturating_sub(s.inputs.rows()).max(1);
        for (i, q) in seqs.iter_mut().enumerate().filter(|(_, q)| q.done.is_none() && q.past < q.req.prompt.len()) {
            if room == 0 {
                break;
            }
            let end = (q.past + room).min(q.req.prompt.len());
            let last = end == q.req.prompt.len();
            let params = last.then(|| q.sampler.next_params());
            let toks = &q.req.prompt[q.past..end];
            if q.req.prompt_logprobs.is_some() {
                s.inputs.push_sequence_all_logits(q.slot, toks, q.past, params);
                for p in q.past..end {
                    s.uses.push(if p + 1 < q.req.prompt.len() { RowUse::Prompt { seq: i, next: p + 1 } } else { RowUse::Sample(i) });
                    s.adjust.push(vec![]);
                }
            } else {
                s.inputs.push_sequence(q.slot, toks, q.past, params);
                if last {
                    s.uses.push(RowUse::Sample(i));
                    s.adjust.push(vec![]);
                }
            }
            s.host |= q.req.needs_host_logits();
            s.prefill = true;
            s.chunks.push((i, end - q.past));
            room -= end - q.past;
        }
        s
    }
}

#[derive(Clone, Copy)]
struct Flags {
    prefill: bool,
    host: bool,
    closed: bool,
    waiting: bool,
}

/// What every rank learns about the world each step.
struct WorldStep {
    tokens: Vec<usize>,
    logits: Vec<usize>,
    any_prefill: bool,
    any_host: bool,
    all_closed: bool,
    any_waiting: bool,
}

/// One all-gather of `[tokens, logit rows, flags]` over the DP group.
fn exchange_meta<B: Device>(be: &B, groups: &GroupSet<B>, local: &LocalStep, f: Flags) -> Result<WorldStep, CommError> {
    let dp = groups.dp.info().size();
    let (rows, logits) = (local.inputs.rows() as u32, local.inputs.logit_rows.len() as u32);
    let bits = u32::from(f.prefill) | u32::from(f.host) << 1 | u32::from(f.closed) << 2 | u32::from(f.waiting) << 3;
    let mine = be.upload(&HostTensor::u32(vec![rows, logits, bits], &[1, 3])?)?;
    let mut all = be.zeros(&[dp, 3], DType::U32)?;
    groups.dp.all_gather(&mine, &vec![1; dp], &mut all)?;
    let HostTensor { data: HostData::U32(v), .. } = be.download(&all)? else {
        return Err(CommError::Backend(BackendError::Unsupported("metadata must be u32".into())));
    };
    let bit = |b: u32| v.chunks(3).map(move |c| c[2] & b != 0);
    Ok(WorldStep {
        tokens: v.chunks(3).map(|c| c[0] as usize).collect(),
        logits: v.chunks(3).map(|c| c[1] as usize).collect(),
        any_prefill: bit(1).any(|x| x),
        any_host: bit(2).any(|x| x),
        all_closed: bit(4).all(|x| x),
        any_waiting: bit(8).any(|x| x),
    })
}

/// TP rank 0's view of the replica's logs, broadcast on the TP group: every TP rank of a
/// replica takes the same requests and cancellations at the same step.
fn agree_in_replica<B: Device>(be: &B, groups: &GroupSet<B>, mine: Snapshot) -> Result<Snapshot, CommError> {
    let words = [mine.requests as u32, (mine.requests >> 32) as u32, mine.cancels as u32, (mine.cancels >> 32) as u32, u32::from(mine.closed)];
    let mut t = be.upload(&HostTensor::u32(words.to_vec(), &[words.len()])?)?;
    groups.tp.broadcast(&mut t, 0)?;
    let HostTensor { data: HostData::U32(v), .. } = be.download(&t)? else {
        return Err(CommError::Backend(BackendError::Unsupported("metadata must be u32".into())));
    };
    let wide = |lo: u32, hi: u32| (u64::from(hi) << 32 | u64::from(lo)) as usize;
    Ok(Snapshot { requests: wide(v[0], v[1]), cancels: wide(v[2], v[3]), closed: v[4] != 0, generation: mine.generation })
}
