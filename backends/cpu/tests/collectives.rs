//! The in-process collectives against naive references, on real plans, and under failure.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use finetp_backend_cpu::comm::{InProcessComm, group_handles};
use finetp_backend_cpu::{CpuBackend, CpuStorage, CpuTensor};
use finetp_core::backend::{Collective, DType, Tensor};
use finetp_core::config::{FinegrainedTpConfig, ParallelConfig};
use finetp_core::plan::Plan;
use finetp_engine::{Launcher, Rank};
use half::bf16;

#[path = "collectives/failures.rs"]
mod failures;

const LONG: Duration = Duration::from_secs(20);

/// SplitMix64: deterministic test data without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

fn storage(rng: &mut Rng, dtype: DType, n: usize) -> CpuStorage {
    match dtype {
        DType::F32 => CpuStorage::F32((0..n).map(|_| rng.f32()).collect()),
        DType::U32 => CpuStorage::U32((0..n).map(|_| rng.next() as u32).collect()),
        DType::BF16 => CpuStorage::BF16((0..n).map(|_| bf16::from_f32(rng.f32())).collect()),
        _ => unreachable!("not used"),
    }
}

fn tensor(s: CpuStorage, shape: &[usize]) -> CpuTensor {
    let dtype = s.dtype();
    Tensor::from_parts(s, shape.to_vec(), dtype)
}

fn zeros(dtype: DType, shape: &[usize]) -> CpuTensor {
    tensor(CpuStorage::zeros(dtype, shape.iter().product()).expect("a stored dtype"), shape)
}

fn f32s(v: Vec<f32>, shape: &[usize]) -> CpuTensor {
    tensor(CpuStorage::F32(v), shape)
}

fn bytes(t: &CpuTensor) -> &[u8] {
    t.buffer().as_bytes()
}

/// Runs `f(member, handle)` on one thread per member; returns the results in member order.
fn run<R: Send>(handles: Vec<InProcessComm>, f: impl Fn(usize, InProcessComm) -> R + Sync) -> Vec<R> {
    thread::scope(|s| {
        let f = &f;
        let joins: Vec<_> = handles.into_iter().enumerate().map(|(i, h)| s.spawn(move || f(i, h))).collect();
        joins.into_iter().map(|j| j.join().expect("member thread panicked")).collect()
    })
}

fn group(n: usize, timeout: Duration) -> Vec<InProcessComm> {
    group_handles("test", &(0..n).map(|i| 10 + i).collect::<Vec<_>>(), timeout)
}

/// Inputs of one randomized case, shared by every member thread and by the references.
struct Case {
    n: usize,
    dtype: DType,
    row: Vec<usize>,
    counts: Vec<usize>,
    /// Member `i`'s rows for all_gather / broadcast (`counts[i]` rows; broadcast uses `full`).
    mine: Vec<CpuTensor>,
    /// `send[i][j]` rows from `i` to `j`.
    send_counts: Vec<Vec<usize>>,
    send: Vec<CpuTensor>,
    root: usize,
    full: Vec<CpuTensor>,
}

fn shape(rows: usize, row: &[usize]) -> Vec<usize> {
    std::iter::once(rows).chain(row.iter().copied()).collect()
}

fn case(rng: &mut Rng, n: usize, dtype: DType, max_rows: usize) -> Case {
    let row: Vec<usize> =
        if rng.below(2) == 0 { vec![1 + rng.below(9)] } else { vec![1 + rng.below(3), 1 + rng.below(4)] };
    let rl: usize = row.iter().product();
    let counts: Vec<usize> = (0..n).map(|_| if rng.below(4) == 0 { 0 } else { rng.below(max_rows + 1) }).collect();
    let total: usize = counts.iter().sum();
    let mine = (0..n).map(|i| tensor(storage(rng, dtype, counts[i] * rl), &shape(counts[i], &row))).collect();
    let send_counts: Vec<Vec<usize>> = (0..n).map(|_| (0..n).map(|_| rng.below(max_rows / 2 + 2)).collect()).collect();
    let send = (0..n)
        .map(|i| {
            let rows: usize = send_counts[i].iter().sum();
            tensor(storage(rng, dtype, rows * rl), &shape(rows, &row))
        })
        .collect();
    let full = (0..n).map(|_| tensor(storage(rng, dtype, total * rl), &shape(total, &row))).collect();
    Case { n, dtype, row, counts, mine, send_counts, send, root: rng.below(n), full }
}

/// What one member got from every collective of a case.
struct Got {
    gathered: CpuTensor,
    exchanged: CpuTensor,
    broadcast: CpuTensor,
    reduced: Option<CpuTensor>,
    scattered: Option<CpuTensor>,
}

fn member(c: &Case, i: usize, h: &InProcessComm) -> Got {
    let total: usize = c.counts.iter().sum();
    let mut gathered = zeros(c.dtype, &shape(total, &c.row));
    h.all_gather(&c.mine[i], &c.counts, &mut gathered).unwrap();
    let recv: Vec<usize> = (0..c.n).map(|j| c.send_counts[j][i]).collect();
    let mut exchanged = zeros(c.dtype, &shape(recv.iter().sum(), &c.row));
    h.all_to_all(&c.send[i], &c.send_counts[i], &recv, &mut exchanged).unwrap();
    let mut broadcast = if i == c.root { clone(&c.full[i]) } else { zeros(c.dtype, c.full[i].shape()) };
    h.broadcast(&mut broadcast, c.root).unwrap();
    h.barrier().unwrap();
    let reduced = (c.dtype != DType::BF16).then(|| {
        let mut t = clone(&c.full[i]);
        h.all_reduce_sum(&mut t).unwrap();
        t
    });
    let scattered = (c.dtype == DType::F32).then(|| {
        let mut out = zeros(c.dtype, &shape(c.counts[i], &c.row));
        h.reduce_scatter_sum(&c.full[i], &c.counts, &mut out).unwrap();
        out
    });
    Got { gathered, exchanged, broadcast, reduced, scattered }
}

fn clone(t: &CpuTensor) -> CpuTensor {
    tensor(t.buffer().clone(), t.shape())
}

/// Sequential sums in member order, the order the collectives promise.
fn reference_sum(c: &Case) -> CpuStorage {
    let len = c.full[0].numel();
    match c.dtype {
        DType::F32 => CpuStorage::F32(
            (0..len)
                .map(|k| {
                    c.full
                        .iter()
                        .skip(1)
                        .fold(c.full[0].buffer().as_f32("t").unwrap()[k], |a, t| a + t.buffer().as_f32("t").unwrap()[k])
                })
                .collect(),
        ),
        DType::U32 => CpuStorage::U32(
            (0..len)
                .map(|k| c.full.iter().fold(0u32, |a, t| a.wrapping_add(t.buffer().as_u32("t").unwrap()[k])))
                .collect(),
        ),
        _ => unreachable!(),
    }
}

fn check_case(c: &Case, got: &[&Got]) {
    let rb = c.row.iter().product::<usize>() * c.dtype.size_in_bytes();
    let gathered: Vec<u8> = c.mine.iter().flat_map(|t| bytes(t).to_vec()).collect();
    let sum = (c.dtype != DType::BF16).then(|| reference_sum(c));
    for (i, g) in got.iter().enumerate() {
        let ctx = format!("n={} dtype={} member={i} counts={:?} row={:?}", c.n, c.dtype, c.counts, c.row);
        assert_eq!(bytes(&g.gathered), &gathered[..], "all_gather {ctx}");
        let mut exchanged = Vec::new();
        for j in 0..c.n {
            let off: usize = c.send_counts[j][..i].iter().sum();
            exchanged.extend_from_slice(&bytes(&c.send[j])[off * rb..(off + c.send_counts[j][i]) * rb]);
        }
        assert_eq!(bytes(&g.exchanged), &exchanged[..], "all_to_all {ctx} sends={:?}", c.send_counts);
        assert_eq!(bytes(&g.broadcast), bytes(&c.full[c.root]), "broadcast {ctx} root={}", c.root);
        if let (Some(r), Some(sum)) = (&g.reduced, &sum) {
            assert_eq!(r.buffer(), sum, "all_reduce_sum {ctx}");
        }
        if let (Some(s), Some(sum)) = (&g.scattered, &sum) {
            let off: usize = c.counts[..i].iter().sum();
            assert_eq!(bytes(s), &sum.as_bytes()[off * rb..(off + c.counts[i]) * rb], "reduce_scatter_sum {ctx}");
        }
    }
}

#[test]
fn every_collective_matches_the_reference() {
    let mut rng = Rng(7);
    for n in [1, 2, 3, 4, 8] {
        for dtype in [DType::F32, DType::U32, DType::BF16] {
            for trial in 0..3 {
                let c = case(&mut rng, n, dtype, if trial == 2 { 300 } else { 6 });
                let got = run(group(n, LONG), |i, h| member(&c, i, &h));
                check_case(&c, &got.iter().collect::<Vec<_>>());
            }
        }
    }
}

#[test]
fn consecutive_collectives_on_one_handle_do_not_overlap() {
    // Many small rounds back to back, with members of very different speed.
    let mut rng = Rng(11);
    let cases: Vec<Case> = (0..40).map(|_| case(&mut rng, 3, DType::F32, 4)).collect();
    let got = run(group(3, LONG), |i, h| {
        cases
            .iter()
            .enumerate()
            .map(|(k, c)| {
                if (k + i) % 7 == 0 {
                    thread::sleep(Duration::from_millis(1));
                }
                member(c, i, &h)
            })
            .collect::<Vec<_>>()
    });
    for (k, c) in cases.iter().enumerate() {
        check_case(c, &got.iter().map(|g| &g[k]).collect::<Vec<_>>());
    }
}

fn make_plan(dp: usize, tp: usize, fg: FinegrainedTpConfig) -> Plan {
    Plan::new(&ParallelConfig::new(dp, tp, 1, false, fg).unwrap())
}

#[test]
fn all_groups_of_a_plan_live_at_once() {
    let fg = FinegrainedTpConfig { embedding: Some(2), lm_head: Some(4), o_proj: Some(8), mlp: Some(1) };
    let plan = make_plan(8, 1, fg);
    Launcher::threads(LONG)
        .run(&plan, |Rank { rank: r, groups: g, .. }: Rank<CpuBackend>| {
            if r == 5 {
                assert_eq!(g.lm_head.info().name(), "lm_head[1]");
                assert_eq!(g.lm_head.info().global_ranks, vec![4, 5, 6, 7]);
                assert_eq!(g.lm_head.info().rank, 1);
                assert_eq!(g.embedding.info().name(), "embedding[2]");
                assert_eq!(g.mlp.info().global_ranks, vec![5]);
                assert_eq!(g.dp.info().name(), "dp[0]");
                assert_eq!(g.dp.info().size(), 8);
            }
            for step in 0..25usize {
                let v = (r * 100 + step) as f32;
                // mlp (size 1): trivial all-reduce.
                let mut t = f32s(vec![v; 3], &[1, 3]);
                g.mlp.all_reduce_sum(&mut t).unwrap();
                assert_eq!(t.buffer().as_f32("t").unwrap(), &[v; 3]);
                // o_proj (size 8): all-gather of uneven rows (rank r has r % 3 rows).
                let counts: Vec<usize> = (0..8).map(|m| m % 3).collect();
                let mine = f32s(vec![v; r % 3 * 2], &[r % 3, 2]);
                let mut out = zeros(DType::F32, &[counts.iter().sum(), 2]);
                g.o_proj.all_gather(&mine, &counts, &mut out).unwrap();
                let want: Vec<f32> = (0..8).flat_map(|m| vec![(m * 100 + step) as f32; m % 3 * 2]).collect();
                assert_eq!(out.buffer().as_f32("o").unwrap(), &want[..]);
                // embedding (size 2): reduce-scatter, 1 row each.
                let e = g.embedding.info().clone();
                let all = f32s(vec![v, v + 1.0], &[2, 1]);
                let mut out = zeros(DType::F32, &[1, 1]);
                g.embedding.reduce_scatter_sum(&all, &[1, 1], &mut out).unwrap();
                let want: f32 = e.global_ranks.iter().map(|&m| (m * 100 + step) as f32 + e.rank as f32).sum();
                assert_eq!(out.buffer().as_f32("e").unwrap(), &[want]);
                // dp (size 8): u32 all-reduce of per-rank token counts.
                let mut t = tensor(CpuStorage::U32(vec![r as u32, 1]), &[2]);
                g.dp.all_reduce_sum(&mut t).unwrap();
                assert_eq!(t.buffer().as_u32("dp").unwrap(), &[28, 8]);
                // lm_head (size 4): broadcast from a rotating root.
                let root = step % 4;
                let l = g.lm_head.info().clone();
                let mut t = f32s(vec![if l.rank == root { v } else { -1.0 }; 4], &[4]);
                g.lm_head.broadcast(&mut t, root).unwrap();
                assert_eq!(t.buffer().as_f32("l").unwrap(), &[(l.global_ranks[root] * 100 + step) as f32; 4]);
            }
            Ok(())
        })
        .unwrap();

    // A non-contiguous layout: DP=4, TP=2 pairs ranks [0,2] [1,3] ...
    let plan = make_plan(4, 2, FinegrainedTpConfig::uniform(2));
    let sums = Launcher::threads(LONG)
        .run(&plan, |Rank { rank: r, groups: g, .. }: Rank<CpuBackend>| {
            if r == 3 {
                assert_eq!(g.o_proj.info().global_ranks, vec![1, 3]);
                assert_eq!(g.dp.info().global_ranks, vec![1, 3, 5, 7]);
            }
            let mut t = f32s(vec![r as f32], &[1]);
            g.o_proj.all_reduce_sum(&mut t).unwrap();
            Ok(t.buffer().as_f32("t").unwrap()[0])
        })
        .unwrap();
    assert_eq!(sums, vec![2.0, 4.0, 2.0, 4.0, 10.0, 12.0, 10.0, 12.0]);
}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<InProcessComm>();
    check::<Arc<dyn Collective<CpuBackend>>>();
}
