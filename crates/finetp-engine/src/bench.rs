//! Component micro-benchmarks: one component's decode-step forward, sharded vs replicated, and
//! the collectives alone — the measurements `finetp bench` prints and the cost model is
//! calibrated from.

use std::time::Instant;

use finetp_core::backend::{Block, CapturedGraph, Device, HostTensor, Tensor};
use finetp_core::config::{Component, FinegrainedTpConfig, ModelConfig, ParallelConfig};
use finetp_core::layers::{ParallelLmHead, ParallelMlp, RowParallelOProj, VocabParallelEmbedding};
use finetp_core::parallel::GroupSet;
use finetp_core::plan::Plan;
use finetp_core::shard::InMemoryWeights;

use crate::launch::{Launcher, Rank};
use crate::EngineError;

/// Bytes of distinct weights a benchmark cycles through: well past this machine's 32 MiB L3.
const COLD_BYTES: usize = 128 << 20;

/// Shortest sample a replicated component's timing aims for (repeating the call within it).
const MIN_SAMPLE_S: f64 = 2e-3;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub data_parallel_size: usize,
    /// Tokens per rank per decode step.
    pub batch_per_rank: usize,
    pub warmup: usize,
    pub repeats: usize,
}

/// Median time of one call of a component's forward on one rank (one layer for o_proj/MLP).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ComponentTiming {
    pub component: Component,
    pub size: usize,
    pub median_s: f64,
    /// Resident weight bytes of one layer's shard on rank 0.
    pub weight_bytes: usize,
}

/// Median time of one `linear` call `y [m, n] = x [m, k] · w [n, k]ᵀ` (f32) on rank 0 while every
/// rank of the world runs the same call at once (so ranks sharing a machine share its memory
/// bandwidth and cores, as they do in a decode step).
#[derive(Debug, Clone, serde::Serialize)]
pub struct GemmTiming {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// Weight bytes one call reads.
    pub weight_bytes: usize,
    pub flops: f64,
    /// True when the calls cycle through enough weight copies to stream from memory; false
    /// when one small weight stays in cache (the compute probe).
    pub cold: bool,
    pub median_s: f64,
}

/// Median time of one collective on a group of `group_size` ranks.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CollectiveTiming {
    pub op: &'static str,
    pub group_size: usize,
    /// Bytes each member contributes.
    pub bytes_per_member: usize,
    pub median_s: f64,
}

/// The layer under test on one rank, with its input.
enum Probe<B: Device> {
    Embedding(VocabParallelEmbedding<B>),
    LmHead(ParallelLmHead<B>),
    OProj(RowParallelOProj<B>),
    Mlp(ParallelMlp<B>),
}

fn weights_for(c: Component, m: &ModelConfig) -> InMemoryWeights {
    let (h, v) = (m.hidden_size, m.vocab_size);
    let shapes: Vec<(String, Vec<usize>)> = match c {
        Component::Embedding | Component::LmHead => vec![("w".into(), vec![v, h])],
        Component::OProj => vec![("w".into(), vec![h, m.o_proj_in_features()])],
        Component::Mlp => {
            let i = m.intermediate_size;
            vec![("mlp.gate_proj.weight".into(), vec![i, h]), ("mlp.up_proj.weight".into(), vec![i, h]), ("mlp.down_proj.weight".into(), vec![h, i])]
        }
    };
    InMemoryWeights::random(&shapes, 1, 0.1)
}

impl<B: Device> Probe<B> {
    fn load(rank: usize, c: Component, be: &B, m: &ModelConfig, w: &InMemoryWeights, g: &GroupSet<B>) -> Result<Self, EngineError> {
        let err = |e| EngineError::layer(rank, e);
        let (h, v) = (m.hidden_size, m.vocab_size);
        Ok(match c {
            Component::Embedding => Probe::Embedding(VocabParallelEmbedding::load(be, w, "w", v, h, g.layer(Component::Embedding)).map_err(err)?),
            Component::LmHead => Probe::LmHead(ParallelLmHead::load(be, w, "w", v, h, g.layer(Component::LmHead)).map_err(err)?),
            Component::OProj => Probe::OProj(RowParallelOProj::load(be, w, "w", None, h, m.o_proj_in_features(), g.layer(Component::OProj)).map_err(err)?),
            Component::Mlp => Probe::Mlp(ParallelMlp::load(be, w, "mlp", h, m.intermediate_size, g.layer(Component::Mlp)).map_err(err)?),
        })
    }

    fn weight_bytes(&self) -> usize {
        match self {
            Probe::Embedding(l) => l.weight_bytes(),
            Probe::LmHead(l) => l.weight_bytes(),
            Probe::OProj(l) => l.weight_bytes(),
            Probe::Mlp(l) => l.weight_bytes(),
        }
    }

    /// One forward on `input` (the probe's token ids, or its hidden / attention rows).
    fn run(&self, rank: usize, be: &B, input: &Tensor<B>, counts: &[usize]) -> Result<(), EngineError> {
        let err = |e| EngineError::layer(rank, e);
        let berr = |source| EngineError::Backend { rank, source };
        let copy = || -> Result<Tensor<B>, EngineError> {
            let mut y = be.zeros(input.shape(), input.dtype()).map_err(berr)?;
            be.copy_block(input, &mut y, Block::whole(input)).map_err(berr)?;
            Ok(y)
        };
        match self {
            Probe::Embedding(l) => drop(l.forward(be, input, counts).map_err(err)?),
            Probe::LmHead(l) => drop(l.forward(be, copy()?, counts).map_err(err)?),
            Probe::OProj(l) => drop(l.forward(be, input, counts).map_err(err)?),
            Probe::Mlp(l) => drop(l.forward(be, copy()?, counts).map_err(err)?),
        }
        be.synchronize().map_err(berr)
    }

    /// The probe's input of `t` rows: token ids for the embedding, else zero activations.
    fn input(rank: usize, c: Component, be: &B, m: &ModelConfig, t: usize) -> Result<Tensor<B>, EngineError> {
        let berr = |source| EngineError::Backend { rank, source };
        match c {
            Component::Embedding => be.upload(&token_ids(m, t, 0)).map_err(berr),
            Component::OProj => be.zeros(&[t, m.o_proj_in_features()], be.activation_dtype()).map_err(berr),
            _ => be.zeros(&[t, m.hidden_size], be.activation_dtype()).map_err(berr),
        }
    }
}

/// The `i`-th set of `t` token ids, spread over the vocabulary (a multiplicative hash).
fn token_ids(m: &ModelConfig, t: usize, i: usize) -> HostTensor {
    let ids: Vec<u32> = (0..t).map(|j| ((i * t + j) as u64 * 2_654_435_761 % m.vocab_size.max(1) as u64) as u32).collect();
    HostTensor { data: finetp_core::backend::HostData::U32(ids), shape: vec![t] }
}

/// Captures `run(j)` for `j < n` as graphs; `None` when the backend cannot capture (the
/// benchmark then runs the calls eagerly).
fn capture_each<B: Device>(rank: usize, be: &B, n: usize, run: impl Fn(usize) -> Result<(), EngineError>) -> Result<Option<Vec<Box<dyn CapturedGraph>>>, EngineError> {
    let mut graphs = Vec::with_capacity(n);
    for j in 0..n {
        if be.begin_capture().is_err() {
            return Ok(None);
        }
        let out = run(j);
        let g = be.end_capture().map_err(|source| EngineError::Backend { rank, source })?;
        out?;
        graphs.push(g);
    }
    Ok(Some(graphs))
}

/// Rank 0's result of a run.
fn first<T>(all: Vec<T>) -> Result<T, EngineError> {
    all.into_iter().next().ok_or_else(|| EngineError::Config("empty world".into()))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Times `component` at group `size` inside the DP world: every rank runs the forward on
/// `batch_per_rank` tokens, `warmup` times unmeasured then `repeats` times; returns rank 0's
/// median (the collectives synchronise the group, so rank 0 waits for the slowest member).
pub fn time_component<B: Device>(launcher: &Launcher, cfg: &BenchConfig, model: &ModelConfig, component: Component, size: usize) -> Result<ComponentTiming, EngineError> {
    let dp = cfg.data_parallel_size;
    let mut fg = FinegrainedTpConfig::default();
    fg.set(component, Some(size));
    let parallel = ParallelConfig::new(dp, 1, 1, false, fg).map_err(|e| EngineError::Config(e.to_string()))?;
    model.validate_parallel(&parallel).map_err(|e| EngineError::Config(e.to_string()))?;
    let weights = weights_for(component, model);
    let t = cfg.batch_per_rank;
    let (times, weight_bytes) = first(launcher.run(&Plan::new(&parallel), |Rank { rank, be, groups }: Rank<B>| {
        // Enough copies of the layer that together they overflow the caches, cycled
        // so every call streams its weights from memory, as a decode step through
        // all layers does (a single small layer would stay cache-resident).
        let one = Probe::load(rank, component, &be, model, &weights, &groups)?;
        let copies = (COLD_BYTES / one.weight_bytes().max(1)).clamp(1, 64);
        let mut probes = vec![one];
        for _ in 1..copies {
            probes.push(Probe::load(rank, component, &be, model, &weights, &groups)?);
        }
        let counts = vec![t; groups.get(component).info().size()];
        let mut input = Probe::input(rank, component, &be, model, t)?;
        // The embedding reads a few rows of a table too big to copy: instead of
        // layer copies, every call gets new token ids (written into the input, as
        // the engine writes a step's ids), spread over the vocabulary.
        let fresh: Vec<HostTensor> = if component == Component::Embedding { (0..4096).map(|i| token_ids(model, t, i)).collect() } else { vec![] };
        // Decode steps run as captured graphs where the backend can capture (as
        // the engine's graph mode does): the timing then has no per-call
        // allocation in it. Every rank makes the same choice (same backend).
        let mut graphs = capture_each(rank, &be, copies, |j| probes[j].run(rank, &be, &input, &counts))?;
        let mut call = |i: usize| -> Result<(), EngineError> {
            let berr = |e| EngineError::Backend { rank, source: e };
            if let Some(ids) = fresh.get(i % fresh.len().max(1)) {
                be.write(&mut input, ids).map_err(berr)?;
            }
            match &mut graphs {
                // SAFETY: the probes' weights and `input` outlive the graphs and are
                // not touched while one replays.
                Some(g) => unsafe { g[i % copies].replay() }.map_err(|source| EngineError::Replay { rank, source })?,
                None => probes[i % copies].run(rank, &be, &input, &counts)?,
            }
            be.synchronize().map_err(berr)
        };
        // A replicated component issues no collective, so its rank may repeat a
        // microsecond-scale call (the embedding's gather) enough times per sample to
        // be timed; a sharded one runs once per sample, in step with its group.
        let inner = if size == 1 {
            let t0 = Instant::now();
            call(0)?;
            (MIN_SAMPLE_S / t0.elapsed().as_secs_f64().max(1e-9)).clamp(1.0, 1024.0) as usize
        } else {
            1
        };
        let mut times = Vec::with_capacity(cfg.repeats);
        for i in 0..cfg.warmup + cfg.repeats {
            groups.dp.barrier().map_err(|source| EngineError::Comm { rank, source })?;
            let t0 = Instant::now();
            for j in 0..inner {
                call(i * inner + j)?;
            }
            if i >= cfg.warmup {
                times.push(t0.elapsed().as_secs_f64() / inner as f64);
            }
        }
        Ok((times, probes[0].weight_bytes()))
    })?)?;
    Ok(ComponentTiming { component, size, median_s: median(times), weight_bytes })
}

/// Times `linear` with `m` rows against `[n, k]` f32 weights on every rank of the DP world at
/// once; `cold` cycles weight copies past the caches (memory-bound probe), otherwise one small
/// weight is reused (compute probe).
pub fn time_gemm<B: Device>(launcher: &Launcher, cfg: &BenchConfig, (n, k): (usize, usize), m: usize, cold: bool) -> Result<GemmTiming, EngineError> {
    let dp = cfg.data_parallel_size;
    let parallel = ParallelConfig::new(dp, 1, 1, false, FinegrainedTpConfig::default()).map_err(|e| EngineError::Config(e.to_string()))?;
    let weight_bytes = n * k * 4;
    let copies = if cold { (COLD_BYTES / weight_bytes.max(1)).clamp(2, 64) } else { 1 };
    let times = first(launcher.run(&Plan::new(&parallel), |Rank { rank, be, groups }: Rank<B>| {
        let berr = |e| EngineError::Backend { rank, source: e };
        let w: Vec<_> = (0..copies)
            .map(|c| {
                let v: Vec<f32> = (0..n * k).map(|i| ((i * 31 + c * 7) % 97) as f32 * 1e-3 - 0.05).collect();
                be.upload(&HostTensor::f32(v, &[n, k]).map_err(berr)?).map_err(berr)
            })
            .collect::<Result<_, _>>()?;
        let act = be.activation_dtype();
        let x = be.upload(&HostTensor::f32(vec![0.01; m * k], &[m, k]).and_then(|h| h.into_dtype(act)).map_err(berr)?).map_err(berr)?;
        let mut y = be.zeros(&[m, n], act).map_err(berr)?;
        let mut times = Vec::with_capacity(cfg.repeats);
        // The compute probe repeats each call several times per sample: one small
        // GEMM is too short to time alone.
        let inner = if cold { 1 } else { 64 };
        for i in 0..cfg.warmup + cfg.repeats {
            groups.dp.barrier().map_err(|source| EngineError::Comm { rank, source })?;
            let t0 = Instant::now();
            for j in 0..inner {
                be.linear(&x, &w[(i * inner + j) % copies], None, &mut y).map_err(berr)?;
            }
            be.synchronize().map_err(berr)?;
            if i >= cfg.warmup {
                times.push(t0.elapsed().as_secs_f64() / inner as f64);
            }
        }
        Ok(times)
    })?)?;
    Ok(GemmTiming { m, n, k, weight_bytes, flops: 2.0 * (m * n * k) as f64, cold, median_s: median(times) })
}

/// Times all-gather, reduce-scatter, all-to-all and all-reduce of `bytes_per_member` on groups of `size`
/// (group 0 of a plan where every component has that size). With threads the plan's world is
/// that one group; in an MPI job it is the job's DP world, every group timing at once.
pub fn time_collectives<B: Device>(launcher: &Launcher, cfg: &BenchConfig, size: usize, bytes_per_member: usize) -> Result<Vec<CollectiveTiming>, EngineError> {
    let world = if launcher.runs_any_world() { size } else { cfg.data_parallel_size };
    let parallel = ParallelConfig::new(world, 1, 1, false, FinegrainedTpConfig::uniform(size)).map_err(|e| EngineError::Config(e.to_string()))?;
    let rows = (bytes_per_member / 4 / 64).max(1);
    let times = first(launcher.run(&Plan::new(&parallel), |Rank { rank, be, groups }: Rank<B>| -> Result<Vec<(&'static str, f64)>, EngineError> {
        let g = &groups.mlp;
        let comm = |e| EngineError::Comm { rank, source: e };
        let berr = |e| EngineError::Backend { rank, source: e };
        let counts = vec![rows; size];
        let act = be.activation_dtype();
        let mine = be.zeros(&[rows, 64], act).map_err(berr)?;
        let mut all = be.zeros(&[rows * size, 64], act).map_err(berr)?;
        let mut out = be.zeros(&[rows, 64], act).map_err(berr)?;
        // Made before the timed calls, as every other op's buffers are (allocating and
        // zeroing it inside the timed region once made all-to-all look 10x slower than
        // all-gather, which moves the same bytes the same way).
        let send = be.zeros(&[rows * size, 64], act).map_err(berr)?;
        let mut times = Vec::new();
        for op in ["all_gather", "reduce_scatter", "all_to_all", "all_reduce"] {
            let mut v = Vec::new();
            for i in 0..cfg.warmup + cfg.repeats {
                g.barrier().map_err(comm)?;
                let t0 = Instant::now();
                match op {
                    "all_gather" => g.all_gather(&mine, &counts, &mut all),
                    "reduce_scatter" => g.reduce_scatter_sum(&all, &counts, &mut out),
                    // Standard TP's collective: what the cost model prices a TP group with.
                    "all_reduce" => g.all_reduce_sum(&mut out),
                    _ => g.all_to_all(&send, &counts, &counts, &mut all),
                }
                .map_err(comm)?;
                if i >= cfg.warmup {
                    v.push(t0.elapsed().as_secs_f64());
                }
            }
            times.push((op, median(v)));
        }
        Ok(times)
    })?)?;
    Ok(times
        .into_iter()
        .map(|(op, median_s)| CollectiveTiming { op, group_size: size, bytes_per_member: rows * 64 * 4, median_s })
        .collect())
}
