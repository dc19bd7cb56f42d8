//! The four sharded layers against the unsharded single-device layers (and those against a
//! naive f64 reference), for every group size inside DP 8 and DP 16, with random uneven token
//! counts (zeros included), prefill and decode shapes, eager execution and a captured graph
//! replayed step after step.
//!
//! Tolerance: 1e-5 relative (max |sharded − unsharded| / max |unsharded|), f32 weights.

use std::sync::Arc;
use std::time::Duration;

use finetp_backend_cpu::{CpuBackend, CpuTensor};
use finetp_backend_cpu::comm::{Fabric, group_handles};
use finetp_core::backend::{Backend, Collective, HostTensor};
use finetp_core::config::{Component, FinegrainedTpConfig, ParallelConfig, pad_vocab};
use finetp_core::layers::{ParallelLmHead, ParallelMlp, RowParallelOProj, VocabParallelEmbedding};
use finetp_core::parallel::{GroupSet, StepCounts};
use finetp_core::plan::Plan;
use finetp_core::shard::InMemoryWeights;

const VOCAB: usize = 100; // padded to 128: shards of 16 rows at P = 8, the last ones partly padding
const HIDDEN: usize = 24;
const ATTN_WIDTH: usize = 32; // num_heads x v_head_dim
const INTER: usize = 48;
const TOL: f32 = 1e-5;
const TIMEOUT: Duration = Duration::from_secs(20);

/// SplitMix64: deterministic inputs without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn weights() -> Arc<InMemoryWeights> {
    let mut r = Rng(7);
    let mut w = InMemoryWeights::default();
    let mut put = |name: &str, shape: &[usize]| {
        let n = shape.iter().product();
        w.insert(name, HostTensor::f32(r.vec(n), shape).unwrap());
    };
    put("embed", &[VOCAB, HIDDEN]);
    put("lm_head", &[VOCAB, HIDDEN]);
    put("o_proj", &[HIDDEN, ATTN_WIDTH]);
    put("o_proj.bias", &[HIDDEN]);
    put("mlp.gate_proj.weight", &[INTER, HIDDEN]);
    put("mlp.up_proj.weight", &[INTER, HIDDEN]);
    put("mlp.down_proj.weight", &[HIDDEN, INTER]);
    Arc::new(w)
}

/// One rank's inputs for one step: its token ids and the hidden/attention rows of its tokens.
#[derive(Clone)]
struct Inputs {
    ids: Vec<u32>,
    hidden: Vec<f32>,
    attn: Vec<f32>,
}

fn inputs(rank: usize, tokens: usize, seed: u64) -> Inputs {
    let mut r = Rng(seed * 1000 + rank as u64);
    Inputs {
        ids: (0..tokens).map(|_| r.below(VOCAB) as u32).collect(),
        hidden: r.vec(tokens * HIDDEN),
        attn: r.vec(tokens * ATTN_WIDTH),
    }
}

/// The four layers' outputs on one rank, as host vectors.
#[derive(Debug, Clone)]
struct Outputs([Vec<f32>; 4]);

struct Layers {
    embed: VocabParallelEmbedding<CpuBackend>,
    lm_head: ParallelLmHead<CpuBackend>,
    o_proj: RowParallelOProj<CpuBackend>,
    mlp: ParallelMlp<CpuBackend>,
}

fn load(be: &CpuBackend, w: &InMemoryWeights, g: &GroupSet<CpuBackend>) -> Layers {
    Layers {
        embed: VocabParallelEmbedding::load(be, w, "embed", VOCAB, HIDDEN, g.embedding.clone()).unwrap(),
        lm_head: ParallelLmHead::load(be, w, "lm_head", VOCAB, HIDDEN, g.lm_head.clone()).unwrap(),
        o_proj: RowParallelOProj::load(be, w, "o_proj", Some("o_proj.bias"), HIDDEN, ATTN_WIDTH, g.o_proj.clone()).unwrap(),
        mlp: ParallelMlp::load(be, w, "mlp", HIDDEN, INTER, g.mlp.clone()).unwrap(),
    }
}

/// Pads `rows` rows of `width` to `capacity` rows with zeros (graph mode's static shapes).
fn pad<T: Copy + Default>(v: &[T], width: usize, capacity: usize) -> Vec<T> {
    let mut out = v.to_vec();
    out.resize(capacity * width, T::default());
    out
}

/// One rank's device inputs: ids `[rows]`, hidden `[rows, H]`, attention output `[rows, A]`.
struct Device3([CpuTensor; 3]);

/// The host tensors of `x` padded to `rows` rows.
fn host_inputs(x: &Inputs, rows: usize) -> [HostTensor; 3] {
    [
        HostTensor::u32(pad(&x.ids, 1, rows), &[rows]).unwrap(),
        HostTensor::f32(pad(&x.hidden, HIDDEN, rows), &[rows, HIDDEN]).unwrap(),
        HostTensor::f32(pad(&x.attn, ATTN_WIDTH, rows), &[rows, ATTN_WIDTH]).unwrap(),
    ]
}

/// The four layers' forwards on one rank's device inputs.
fn forward(be: &CpuBackend, l: &Layers, g: &GroupSet<CpuBackend>, x: &Device3, counts: &StepCounts) -> [CpuTensor; 4] {
    let c = |grp: &Arc<dyn Collective<CpuBackend>>| counts.for_group(grp.info());
    let [ids, hidden, attn] = &x.0;
    let copy = |t: &CpuTensor| {
        let mut y = be.zeros(t.shape(), t.dtype()).unwrap();
        be.copy_block(t, 0, 0, &mut y, 0, 0, t.rows(), t.row_len()).unwrap();
        y
    };
    [
        l.embed.forward(be, ids, &c(&g.embedding)).unwrap(),
        l.lm_head.forward(be, copy(hidden), &c(&g.lm_head)).unwrap(),
        l.o_proj.forward(be, attn, &c(&g.o_proj)).unwrap(),
        l.mlp.forward(be, copy(hidden), &c(&g.mlp)).unwrap(),
    ]
}

/// The first `t` rows of each output, on the host (graph mode drops the padded rows).
fn outputs(be: &CpuBackend, outs: &[CpuTensor; 4], t: usize) -> Outputs {
    Outputs(std::array::from_fn(|i| {
        let mut v = be.download(&outs[i]).unwrap().to_f32_vec().unwrap();
        v.truncate(t * outs[i].row_len());
        v
    }))
}

/// One eager step on one rank with the real counts.
fn step(be: &CpuBackend, l: &Layers, g: &GroupSet<CpuBackend>, x: &Inputs, counts: &StepCounts) -> Outputs {
    let t = x.ids.len();
    let dev = Device3(host_inputs(x, t).map(|h| be.upload(&h).unwrap()));
    outputs(be, &forward(be, l, g, &dev, counts), t)
}

/// Every rank of a DP world runs `steps` steps; returns outputs per step per rank.
///
/// Graph mode does what the engine does: one static capacity (the largest count of any step),
/// the four layers captured once on fixed input tensors, and every step — the first included
/// — a rewrite of those inputs and a replay.
fn run_world(dp: usize, fg: FinegrainedTpConfig, steps: &[Vec<usize>], seed: u64, graph: bool) -> Vec<Vec<Outputs>> {
    let plan = Plan::new(&ParallelConfig::new(dp, 1, 1, false, fg).unwrap());
    let fabric = Arc::new(Fabric::new(&plan, TIMEOUT));
    let w = weights();
    let capacity = steps.iter().flatten().copied().max().unwrap_or(0);
    let handles: Vec<_> = (0..dp)
        .map(|rank| {
            let (fabric, w, steps) = (fabric.clone(), w.clone(), steps.to_vec());
            std::thread::spawn(move || {
                let be = CpuBackend::new(1).unwrap();
                let g = fabric.connect(rank).unwrap();
                let l = load(&be, &w, &g);
                let x = |s: usize, tokens: &[usize]| inputs(rank, tokens[rank], seed + s as u64);
                if !graph {
                    return steps.iter().enumerate().map(|(s, tokens)| step(&be, &l, &g, &x(s, tokens), &StepCounts::new(tokens.clone(), 1))).collect();
                }
                let mut dev = Device3(host_inputs(&x(0, &steps[0]), capacity).map(|h| be.upload(&h).unwrap()));
                be.begin_capture().unwrap();
                let outs = forward(&be, &l, &g, &dev, &StepCounts::uniform(dp, capacity, 1));
                let mut graph = be.end_capture().unwrap();
                steps
                    .iter()
                    .enumerate()
                    .map(|(s, tokens)| {
                        let xs = x(s, tokens);
                        for (t, h) in dev.0.iter_mut().zip(host_inputs(&xs, capacity)) {
                            be.write(t, &h).unwrap();
                        }
                        // SAFETY: the layers' weights, `dev` and `outs` are alive and idle.
                        unsafe { graph.replay().unwrap() };
                        outputs(&be, &outs, tokens[rank])
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let per_rank: Vec<Vec<Outputs>> = handles.into_iter().map(|h| h.join().expect("rank thread")).collect();
    (0..steps.len()).map(|s| per_rank.iter().map(|r| r[s].clone()).collect()).collect()
}

/// The unsharded single-device outputs of one rank's inputs.
fn unsharded(x: &Inputs) -> Outputs {
    let be = CpuBackend::new(1).unwrap();
    let one = || -> Arc<dyn Collective<CpuBackend>> { Arc::new(group_handles("single", &[0], TIMEOUT).remove(0)) };
    let g = GroupSet { embedding: one(), lm_head: one(), o_proj: one(), mlp: one(), dp: one() };
    let l = load(&be, &weights(), &g);
    let t = x.ids.len();
    step(&be, &l, &g, x, &StepCounts::new(vec![t], 1))
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    let err = got.iter().zip(want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(err / scale <= TOL, "{what}: max rel err {:.2e} > {TOL:e}", err / scale);
}

/// Random per-step token counts: decode (0 or 1 per rank) or prefill (0..=9), always with
/// at least one idle rank and at least one busy one.
fn token_steps(dp: usize, prefill: bool, seed: u64, n: usize) -> Vec<Vec<usize>> {
    let mut r = Rng(seed);
    (0..n)
        .map(|_| {
            let mut c: Vec<usize> = (0..dp).map(|_| if prefill { r.below(10) } else { r.below(2) }).collect();
            c[r.below(dp)] = 0;
            let busy = (r.below(dp - 1) + 1 + c.iter().position(|&x| x == 0).unwrap()) % dp;
            c[busy] = c[busy].max(1);
            c
        })
        .collect()
}

fn check(dp: usize, fg: FinegrainedTpConfig, label: &str) {
    for (prefill, graph) in [(false, false), (false, true), (true, false), (true, true)] {
        let seed = dp as u64 * 31 + u64::from(prefill) * 7 + u64::from(graph);
        let steps = token_steps(dp, prefill, seed, 2);
        let outs = run_world(dp, fg, &steps, seed, graph);
        for (s, tokens) in steps.iter().enumerate() {
            for rank in 0..dp {
                let want = unsharded(&inputs(rank, tokens[rank], seed + s as u64));
                for (i, name) in ["embedding", "lm_head", "o_proj", "mlp"].iter().enumerate() {
                    let what = format!("{label} dp{dp} prefill={prefill} graph={graph} step {s} rank {rank} ({} tokens) {name}", tokens[rank]);
                    assert_close(&outs[s][rank].0[i], &want.0[i], &what);
                }
            }
        }
    }
}

#[test]
fn each_component_alone_matches_unsharded() {
    for dp in [8, 16] {
        for size in [1, 2, 4, 8] {
            for c in Component::ALL {
                let mut fg = FinegrainedTpConfig::default();
                fg.set(c, Some(size));
                check(dp, fg, &format!("{c}={size}"));
            }
        }
    }
}

#[test]
fn all_four_together_match_unsharded() {
    for dp in [8, 16] {
        for size in [1, 2, 4, 8] {
            check(dp, FinegrainedTpConfig::uniform(size), &format!("all={size}"));
        }
        // Different sizes at once: four live group layouts.
        let mixed = FinegrainedTpConfig { embedding: Some(2), lm_head: Some(8), o_proj: Some(4), mlp: Some(1) };
        check(dp, mixed, "mixed");
    }
}

/// The unsharded layers against a naive f64 reference, so the comparison above is anchored.
#[test]
fn unsharded_layers_match_a_naive_reference() {
    let w = weights();
    let get = |n: &str| w.tensors[n].to_f32_vec().unwrap();
    let x = inputs(3, 5, 99);
    let out = unsharded(&x);
    let matvec = |m: &[f32], rows: usize, cols: usize, v: &[f32]| -> Vec<f64> {
        (0..rows).map(|r| (0..cols).map(|c| f64::from(m[r * cols + c]) * f64::from(v[c])).sum()).collect()
    };
    let (mut emb, mut logits, mut o, mut mlp) = (vec![], vec![], vec![], vec![]);
    for t in 0..5 {
        let h = &x.hidden[t * HIDDEN..(t + 1) * HIDDEN];
        let id = x.ids[t] as usize;
        emb.extend(get("embed")[id * HIDDEN..(id + 1) * HIDDEN].iter().copied());
        logits.extend(matvec(&get("lm_head"), VOCAB, HIDDEN, h).iter().map(|v| *v as f32));
        let a = &x.attn[t * ATTN_WIDTH..(t + 1) * ATTN_WIDTH];
        let bias = get("o_proj.bias");
        o.extend(matvec(&get("o_proj"), HIDDEN, ATTN_WIDTH, a).iter().zip(&bias).map(|(v, b)| (*v + f64::from(*b)) as f32));
        let g = matvec(&get("mlp.gate_proj.weight"), INTER, HIDDEN, h);
        let u = matvec(&get("mlp.up_proj.weight"), INTER, HIDDEN, h);
        let act: Vec<f32> = g.iter().zip(&u).map(|(g, u)| (g / (1.0 + (-g).exp()) * u) as f32).collect();
        mlp.extend(matvec(&get("mlp.down_proj.weight"), HIDDEN, INTER, &act).iter().map(|v| *v as f32));
    }
    for (i, want) in [emb, logits, o, mlp].iter().enumerate() {
        assert_close(&out.0[i], want, &format!("naive reference, layer {i}"));
    }
}

/// Each member's resident weight bytes, measured from the live buffers, are 1/size of the
/// replicated bytes (the vocabulary's padding included in both).
#[test]
fn resident_weight_bytes_shrink_by_the_group_size() {
    let w = weights();
    for size in [1, 2, 4, 8] {
        let plan = Plan::new(&ParallelConfig::new(8, 1, 1, false, FinegrainedTpConfig::uniform(size)).unwrap());
        let fabric = Fabric::new(&plan, TIMEOUT);
        let be = CpuBackend::new(1).unwrap();
        // Loading needs no communication, so every rank's layers can be built on this thread.
        for rank in 0..8 {
            let l = load(&be, &w, &fabric.connect(rank).unwrap());
            let f32b = 4;
            assert_eq!(l.embed.weight_bytes(), pad_vocab(VOCAB) * HIDDEN * f32b / size, "embedding, size {size}");
            assert_eq!(l.lm_head.weight_bytes(), pad_vocab(VOCAB) * HIDDEN * f32b / size, "lm_head, size {size}");
            let bias = if plan.membership(Component::OProj, rank).unwrap().rank_in_group == 0 { HIDDEN * f32b } else { 0 };
            assert_eq!(l.o_proj.weight_bytes(), HIDDEN * ATTN_WIDTH * f32b / size + bias, "o_proj, size {size}");
            assert_eq!(l.mlp.weight_bytes(), 3 * HIDDEN * INTER * f32b / size, "mlp, size {size}");
        }
    }
}
