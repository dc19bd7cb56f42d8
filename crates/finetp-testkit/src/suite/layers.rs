//! The four sharded layers on `B` against the CPU's unsharded layers (and those against a naive
//! f64 reference): every component alone and all four together at every size of a DP world,
//! and again under standard TP 2 composed with them (each TP rank given its replica's inputs and
//! its heads' slice of the attention output, and expected to return the replica's outputs),
//! random uneven token counts with idle ranks, prefill and decode shapes, eagerly and as a graph
//! captured once and replayed step after step (where `B` captures; otherwise graph mode's
//! padded static shapes run eagerly). Within [`Op::Layer`] of `max |unsharded|`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use finetp_backend_cpu::CpuBackend;
use finetp_core::backend::{Backend, Block, Collective, DType, Device, HostTensor, Tensor};
use finetp_core::config::{Component, FinegrainedTpConfig, ParallelConfig};
use finetp_core::layers::{ParallelLmHead, ParallelMlp, RowParallelOProj, VocabParallelEmbedding};
use finetp_core::parallel::{GroupSet, StepCounts};
use finetp_core::plan::Plan;
use finetp_core::shard::InMemoryWeights;
use finetp_engine::{EngineError, Launcher, Rank};

use super::data::{f32s, host};
use super::{Case, Env};
use crate::Rng;
use crate::tolerance::{Op, close_scaled};

const VOCAB: usize = 100; // padded to 128: shards of 16 rows at P = 8, the last partly padding
const HIDDEN: usize = 24;
const ATTN: usize = 32; // num_heads x v_head_dim
const INTER: usize = 48;
const NAMES: [&str; 4] = ["embedding", "lm_head", "o_proj", "mlp"];

pub(super) fn cases<B: Device>() -> Vec<Case<B>> {
    vec![
        Case::new("layers_sharded_at_every_size_equal_the_unsharded_cpu_layers", &[], sizes::<B>),
        Case::new("layers_under_tp_composed_with_finegrained_sizes_equal_the_unsharded_cpu_layers", &[], under_tp::<B>),
        Case::new("layers_unsharded_equal_a_naive_reference", &[], naive::<B>),
    ]
}

fn sizes<B: Device>(_env: &Env<B>) -> Result<(), String> {
    sweep::<B>(&[4], &[1, 2, 4])
}

/// TP 2 x DP 2: standard TP alone, each component at size 2, all four at 2, and TP 2 x DP 4
/// with a mixed layout (parts of 2, 4 and 8).
fn under_tp<B: Device>(_env: &Env<B>) -> Result<(), String> {
    check_tp::<B>(2, 2, FinegrainedTpConfig::default(), "tp only")?;
    for c in Component::ALL {
        let mut fg = FinegrainedTpConfig::default();
        fg.set(c, Some(2));
        check_tp::<B>(2, 2, fg, &format!("{c}=2"))?;
    }
    check_tp::<B>(2, 2, FinegrainedTpConfig::uniform(2), "all=2")?;
    check_tp::<B>(4, 2, FinegrainedTpConfig { embedding: Some(2), lm_head: Some(4), o_proj: Some(4), mlp: None }, "mixed")
}

/// Every component alone, all four together, and a mixed layout, at every size in `sizes`
/// that divides each DP size in `dps`.
pub fn sweep<B: Device>(dps: &[usize], sizes: &[usize]) -> Result<(), String> {
    for &dp in dps {
        for &size in sizes.iter().filter(|&&s| dp.is_multiple_of(s)) {
            for c in Component::ALL {
                let mut fg = FinegrainedTpConfig::default();
                fg.set(c, Some(size));
                check::<B>(dp, fg, &format!("{c}={size}"))?;
            }
            check::<B>(dp, FinegrainedTpConfig::uniform(size), &format!("all={size}"))?;
        }
        let mixed = FinegrainedTpConfig { embedding: Some(2), lm_head: Some(dp), o_proj: Some(dp.min(4)), mlp: Some(1) };
        check::<B>(dp, mixed, "mixed")?;
    }
    Ok(())
}

pub(super) fn weights() -> Arc<InMemoryWeights> {
    let mut r = Rng::new(7);
    let mut w = InMemoryWeights::default();
    let mut put = |name: &str, shape: &[usize]| {
        let n = shape.iter().product();
        w.insert(name, HostTensor::f32(r.f32s(n), shape).expect("fits"));
    };
    put("embed", &[VOCAB, HIDDEN]);
    put("lm_head", &[VOCAB, HIDDEN]);
    put("o_proj", &[HIDDEN, ATTN]);
    put("o_proj.bias", &[HIDDEN]);
    put("mlp.gate_proj.weight", &[INTER, HIDDEN]);
    put("mlp.up_proj.weight", &[INTER, HIDDEN]);
    put("mlp.down_proj.weight", &[HIDDEN, INTER]);
    Arc::new(w)
}

/// One rank's inputs for one step: token ids and the hidden / attention rows of its tokens.
#[derive(Clone)]
pub(super) struct Inputs {
    pub ids: Vec<u32>,
    pub hidden: Vec<f32>,
    pub attn: Vec<f32>,
    /// Columns of `attn` (`ATTN`, or a TP rank's slice of it).
    pub attn_w: usize,
}

pub(super) fn inputs(rank: usize, tokens: usize, seed: u64) -> Inputs {
    let mut r = Rng::new(seed * 1000 + rank as u64);
    Inputs { ids: (0..tokens).map(|_| r.below(VOCAB) as u32).collect(), hidden: r.f32s(tokens * HIDDEN), attn: r.f32s(tokens * ATTN), attn_w: ATTN }
}

/// The four layers' outputs of one rank and step, on the host.
type Outputs = [Vec<f32>; 4];

struct Layers<B: Device> {
    embed: VocabParallelEmbedding<B>,
    lm_head: ParallelLmHead<B>,
    o_proj: RowParallelOProj<B>,
    mlp: ParallelMlp<B>,
}

fn load<B: Device>(be: &B, w: &InMemoryWeights, g: &GroupSet<B>) -> Result<Layers<B>, String> {
    let e = |e: finetp_core::layers::LayerError| e.to_string();
    Ok(Layers {
        embed: VocabParallelEmbedding::load(be, w, "embed", VOCAB, HIDDEN, g.layer(Component::Embedding)).map_err(e)?,
        lm_head: ParallelLmHead::load(be, w, "lm_head", VOCAB, HIDDEN, g.layer(Component::LmHead)).map_err(e)?,
        o_proj: RowParallelOProj::load(be, w, "o_proj", Some("o_proj.bias"), HIDDEN, ATTN, g.layer(Component::OProj)).map_err(e)?,
        mlp: ParallelMlp::load(be, w, "mlp", HIDDEN, INTER, g.layer(Component::Mlp)).map_err(e)?,
    })
}

/// The host tensors of `x` padded with zeros to `rows` rows (graph mode's static shapes).
fn host_inputs(x: &Inputs, rows: usize, act: DType) -> [HostTensor; 3] {
    let pad = |v: &[f32], w: usize| {
        let mut o = v.to_vec();
        o.resize(rows * w, 0.0);
        o
    };
    let mut ids = x.ids.clone();
    ids.resize(rows, 0);
    [HostTensor::u32(ids, &[rows]).expect("fits"), host(&pad(&x.hidden, HIDDEN), &[rows, HIDDEN], act), host(&pad(&x.attn, x.attn_w), &[rows, x.attn_w], act)]
}

/// The four forwards on one rank's device inputs `[ids, hidden, attn]`.
fn forward<B: Device>(be: &B, l: &Layers<B>, g: &GroupSet<B>, x: &[Tensor<B>; 3], counts: &StepCounts) -> Result<[Tensor<B>; 4], String> {
    let c = |grp: &Arc<dyn Collective<B>>| counts.for_group(grp.info());
    let e = |e: finetp_core::layers::LayerError| e.to_string();
    let copy = |t: &Tensor<B>| -> Result<Tensor<B>, String> {
        let mut y = be.zeros(t.shape(), t.dtype()).map_err(|e| e.to_string())?;
        be.copy_block(t, &mut y, Block::whole(t)).map_err(|e| e.to_string())?;
        Ok(y)
    };
    let [ids, hidden, attn] = x;
    Ok([
        l.embed.forward(be, ids, &c(&g.embedding)).map_err(e)?,
        l.lm_head.forward(be, copy(hidden)?, &c(&g.lm_head)).map_err(e)?,
        l.o_proj.forward(be, attn, &c(&g.o_proj)).map_err(e)?,
        l.mlp.forward(be, copy(hidden)?, &c(&g.mlp)).map_err(e)?,
    ])
}

/// The first `t` rows of each output.
fn outputs<B: Device>(be: &B, outs: &[Tensor<B>; 4], t: usize) -> Result<Outputs, String> {
    let mut o: Outputs = Default::default();
    for (i, out) in outs.iter().enumerate() {
        let mut v = f32s(be, out)?;
        v.truncate(t * out.row_len());
        o[i] = v;
    }
    Ok(o)
}

/// One rank's steps: eager with the real counts, or (graph) captured once at the largest count
/// and replayed on rewritten inputs every step.
fn rank_steps<B: Device>(rank: &Rank<B>, w: &InMemoryWeights, steps: &[Vec<usize>], seed: u64, graph: bool) -> Result<Vec<Outputs>, String> {
    let (be, g) = (&rank.be, &rank.groups);
    // This rank's replica (whose tokens it runs) and TP position (whose heads it attends with).
    let (tp, j) = (g.tp.info().size(), g.tp.info().rank);
    let me = rank.rank / tp;
    let act = be.activation_dtype();
    let dp = steps.first().map_or(1, Vec::len);
    let l = load(be, w, g)?;
    let x = |s: usize, tokens: &[usize]| tp_slice(inputs(me, tokens[me], seed + s as u64), j, tp);
    let up = |h: [HostTensor; 3]| -> Result<[Tensor<B>; 3], String> {
        let [a, b, c] = h;
        let u = |h: HostTensor| be.upload(&h).map_err(|e| e.to_string());
        Ok([u(a)?, u(b)?, u(c)?])
    };
    if !graph {
        return steps
            .iter()
            .enumerate()
            .map(|(s, tokens)| {
                let xs = x(s, tokens);
                let dev = up(host_inputs(&xs, xs.ids.len(), act))?;
                outputs(be, &forward(be, &l, g, &dev, &StepCounts::new(tokens.clone(), tp))?, tokens[me])
            })
            .collect();
    }
    let capacity = steps.iter().flatten().copied().max().unwrap_or(0);
    let counts = StepCounts::uniform(dp, capacity, tp);
    let mut dev = up(host_inputs(&x(0, &steps[0]), capacity, act))?;
    // Every rank of a run has the same backend, so all make the same choice.
    let captured = be.begin_capture().is_ok();
    let outs = forward(be, &l, g, &dev, &counts);
    let mut graph = if captured { Some(be.end_capture().map_err(|e| e.to_string())?) } else { None };
    let mut outs = outs?;
    let mut all = Vec::with_capacity(steps.len());
    for (s, tokens) in steps.iter().enumerate() {
        for (t, h) in dev.iter_mut().zip(host_inputs(&x(s, tokens), capacity, act)) {
            be.write(t, &h).map_err(|e| e.to_string())?;
        }
        match &mut graph {
            // SAFETY: the layers' weights, `dev` and `outs` are alive and idle during the replay.
            Some(gr) => unsafe { gr.replay() }.map_err(|e| e.to_string())?,
            None => outs = forward(be, &l, g, &dev, &counts)?,
        }
        all.push(outputs(be, &outs, tokens[me])?);
    }
    Ok(all)
}

/// TP rank `j` of `tp`'s view of a replica's inputs: the same ids and hidden rows, and its
/// heads' columns of the attention output (o_proj's input under TP).
fn tp_slice(mut x: Inputs, j: usize, tp: usize) -> Inputs {
    if tp > 1 {
        let w = ATTN / tp;
        x.attn = x.attn.chunks(ATTN).flat_map(|row| row[j * w..(j + 1) * w].to_vec()).collect();
        x.attn_w = w;
    }
    x
}

/// Every rank's outputs, per step then per rank, and the backend's activation dtype.
fn run_world<B: Device>(dp: usize, tp: usize, fg: FinegrainedTpConfig, steps: &[Vec<usize>], seed: u64, graph: bool) -> Result<(DType, Vec<Vec<Outputs>>), String> {
    let plan = Plan::new(&ParallelConfig::new(dp, tp, 1, false, fg).map_err(|e| e.to_string())?);
    let w = weights();
    let per_rank = Launcher::threads(Duration::from_secs(60))
        .run(&plan, |rank: Rank<B>| {
            let outs = rank_steps(&rank, &w, steps, seed, graph).map_err(|e| EngineError::Config(format!("rank {}: {e}", rank.rank)))?;
            Ok((rank.be.activation_dtype(), outs))
        })
        .map_err(|e| e.to_string())?;
    let act = per_rank.first().map_or(DType::F32, |r| r.0);
    Ok((act, (0..steps.len()).map(|s| per_rank.iter().map(|r| r.1[s].clone()).collect()).collect()))
}

/// The CPU's unsharded outputs of each of `inputs` (one rank, every group of one).
fn unsharded(inputs: &[Inputs]) -> Result<Vec<Outputs>, String> {
    let plan = Plan::new(&ParallelConfig::new(1, 1, 1, false, FinegrainedTpConfig::default()).map_err(|e| e.to_string())?);
    let w = weights();
    let out = Mutex::new(Vec::new());
    Launcher::default()
        .run(&plan, |rank: Rank<CpuBackend>| {
            let run = || -> Result<Vec<Outputs>, String> {
                let l = load(&rank.be, &w, &rank.groups)?;
                inputs
                    .iter()
                    .map(|x| {
                        let t = x.ids.len();
                        let [a, b, c] = host_inputs(x, t, DType::F32);
                        let u = |h: HostTensor| rank.be.upload(&h).map_err(|e| e.to_string());
                        let dev = [u(a)?, u(b)?, u(c)?];
                        outputs(&rank.be, &forward(&rank.be, &l, &rank.groups, &dev, &StepCounts::new(vec![t], 1))?, t)
                    })
                    .collect()
            };
            *out.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = run().map_err(|e| EngineError::Config(e.clone()))?;
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    Ok(out.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner))
}

/// `got` within `tol` of `want`, relative to `max |want|`.
fn close_to_scale(got: &[f32], want: &[f32], tol: f32, what: &str) -> Result<(), String> {
    let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    close_scaled(got, want, tol, |_| scale, what)
}

/// Random per-step token counts: decode (0 or 1 per rank) or prefill (0..=9), always with at
/// least one idle rank and at least one busy one.
fn token_steps(dp: usize, prefill: bool, seed: u64, n: usize) -> Vec<Vec<usize>> {
    let mut r = Rng::new(seed);
    (0..n)
        .map(|_| {
            let mut c: Vec<usize> = (0..dp).map(|_| if prefill { r.below(10) } else { r.below(2) }).collect();
            c[r.below(dp)] = 0;
            if dp > 1 {
                let idle = c.iter().position(|&x| x == 0).unwrap_or(0);
                let busy = (r.below(dp - 1) + 1 + idle) % dp;
                c[busy] = c[busy].max(1);
            } else {
                c[0] = c[0].max(1);
            }
            c
        })
        .collect()
}

/// `fg` at DP `dp`: eager and graph, prefill and decode, against the CPU unsharded layers.
pub fn check<B: Device>(dp: usize, fg: FinegrainedTpConfig, label: &str) -> Result<(), String> {
    check_tp::<B>(dp, 1, fg, label)
}

/// `fg` at DP `dp` x TP `tp`; every TP rank of a replica must return the replica's outputs.
pub fn check_tp<B: Device>(dp: usize, tp: usize, fg: FinegrainedTpConfig, label: &str) -> Result<(), String> {
    for (prefill, graph) in [(false, false), (false, true), (true, false), (true, true)] {
        let seed = dp as u64 * 31 + u64::from(prefill) * 7 + u64::from(graph);
        let steps = token_steps(dp, prefill, seed, 2);
        let (act, outs) = run_world::<B>(dp, tp, fg, &steps, seed, graph)?;
        let tol = Op::Layer.tol(act);
        let all_inputs: Vec<Inputs> = steps.iter().enumerate().flat_map(|(s, tokens)| (0..dp).map(move |r| inputs(r, tokens[r], seed + s as u64))).collect();
        let want = unsharded(&all_inputs)?;
        for (s, tokens) in steps.iter().enumerate() {
            for (rank, got) in outs[s].iter().enumerate() {
                let replica = rank / tp;
                for (i, name) in NAMES.iter().enumerate() {
                    let what = format!("{label} dp{dp} tp{tp} prefill={prefill} graph={graph} step {s} rank {rank} ({} tokens) {name}", tokens[replica]);
                    close_to_scale(&got[i], &want[s * dp + replica][i], tol, &what)?;
                }
            }
        }
    }
    Ok(())
}

/// The unsharded layers on `B` against a naive f64 reference, so the comparisons above are
/// anchored to the math, not only to the CPU backend.
fn naive<B: Device>(env: &Env<B>) -> Result<(), String> {
    let w = weights();
    let get = |n: &str| w.tensors[n].to_f32_vec().unwrap_or_default();
    let x = inputs(3, 5, 99);
    let plan = Plan::new(&ParallelConfig::new(1, 1, 1, false, FinegrainedTpConfig::default()).map_err(|e| e.to_string())?);
    let act = env.be.activation_dtype();
    let out = Launcher::default()
        .run(&plan, |rank: Rank<B>| {
            let run = || -> Result<Outputs, String> {
                let l = load(&rank.be, &w, &rank.groups)?;
                let [a, b, c] = host_inputs(&x, 5, act);
                let u = |h: HostTensor| rank.be.upload(&h).map_err(|e| e.to_string());
                let dev = [u(a)?, u(b)?, u(c)?];
                outputs(&rank.be, &forward(&rank.be, &l, &rank.groups, &dev, &StepCounts::new(vec![5], 1))?, 5)
            };
            run().map_err(EngineError::Config)
        })
        .map_err(|e| e.to_string())?
        .remove(0);
    let matvec = |m: &[f32], rows: usize, cols: usize, v: &[f32]| -> Vec<f64> {
        (0..rows).map(|r| (0..cols).map(|c| f64::from(m[r * cols + c]) * f64::from(v[c])).sum()).collect()
    };
    let (mut emb, mut logits, mut o, mut mlp) = (vec![], vec![], vec![], vec![]);
    for t in 0..5 {
        let h = &x.hidden[t * HIDDEN..(t + 1) * HIDDEN];
        let id = x.ids[t] as usize;
        emb.extend(get("embed")[id * HIDDEN..(id + 1) * HIDDEN].iter().copied());
        logits.extend(matvec(&get("lm_head"), VOCAB, HIDDEN, h).iter().map(|v| *v as f32));
        let a = &x.attn[t * ATTN..(t + 1) * ATTN];
        let bias = get("o_proj.bias");
        o.extend(matvec(&get("o_proj"), HIDDEN, ATTN, a).iter().zip(&bias).map(|(v, b)| (*v + f64::from(*b)) as f32));
        let g = matvec(&get("mlp.gate_proj.weight"), INTER, HIDDEN, h);
        let u = matvec(&get("mlp.up_proj.weight"), INTER, HIDDEN, h);
        let act: Vec<f32> = g.iter().zip(&u).map(|(g, u)| (g / (1.0 + (-g).exp()) * u) as f32).collect();
        mlp.extend(matvec(&get("mlp.down_proj.weight"), HIDDEN, INTER, &act).iter().map(|v| *v as f32));
    }
    let tol = Op::Layer.tol(act);
    for (i, want) in [emb, logits, o, mlp].iter().enumerate() {
        close_to_scale(&out[i], want, tol, &format!("{} against the naive f64 reference", NAMES[i]))?;
    }
    Ok(())
}
