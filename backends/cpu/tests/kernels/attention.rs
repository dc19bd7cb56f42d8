//! The paged KV-cache kernels: `kv_cache_write` places rows exactly through a scrambled block
//! table, and `kv_cache_attention` (causal, GQA, sliding windows, many sequences and padding in
//! one call) matches an f64 reference computed on the contiguous, unpaged cache; then the error
//! paths.

use finetp_core::backend::{AttentionParams, DType, Kernels, KvIndex, PAD_SLOT, Tensor};

use super::{Rng, be, data, f32t, is_dtype_err, is_shape_err, typed};
use finetp_backend_cpu::{CpuStorage, CpuTensor};

fn u32t(v: Vec<u32>, shape: &[usize]) -> CpuTensor {
    Tensor::from_parts(CpuStorage::U32(v), shape.to_vec(), DType::U32)
}

/// A paging of `slots` sequences of `max_blocks` blocks of `bs` rows into a pool with two spare
/// blocks: the block table (scrambled) and, for each logical row `(slot, pos)`, its pool row.
struct Paging {
    bs: usize,
    max_blocks: usize,
    blocks: usize,
    table: Vec<u32>,
}

impl Paging {
    fn new(rng: &mut Rng, slots: usize, max_blocks: usize, bs: usize) -> Self {
        let blocks = slots * max_blocks + 2;
        let mut ids: Vec<u32> = (0..blocks as u32).collect();
        for i in (1..ids.len()).rev() {
            ids.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        Self { bs, max_blocks, blocks, table: ids[..slots * max_blocks].to_vec() }
    }

    fn pool_row(&self, slot: usize, pos: usize) -> usize {
        self.table[slot * self.max_blocks + pos / self.bs] as usize * self.bs + pos % self.bs
    }

    /// The pool `[blocks, bs, row]` holding the contiguous cache `[slots, L, row]` (`L` =
    /// `max_blocks · bs`), unowned rows filled with `fill`.
    fn scatter(&self, logical: &[f32], slots: usize, row: usize, fill: f32) -> Vec<f32> {
        let l = self.max_blocks * self.bs;
        let mut pool = vec![fill; self.blocks * self.bs * row];
        for s in 0..slots {
            for p in 0..l {
                let (src, dst) = ((s * l + p) * row, self.pool_row(s, p) * row);
                pool[dst..dst + row].copy_from_slice(&logical[src..src + row]);
            }
        }
        pool
    }
}

/// One query row: `y [nh, dv]` in f64 over keys `first..=pos` of `k`/`v` `[L, nkv, d]` (one slot).
#[allow(clippy::too_many_arguments)]
fn attention_ref(q: &[f32], k: &[f32], v: &[f32], (nh, nkv, dk, dv): (usize, usize, usize, usize), pos: usize, first: usize, scale: f32) -> Vec<f64> {
    let mut y = vec![0f64; nh * dv];
    for h in 0..nh {
        let kh = h / (nh / nkv);
        let qv = &q[h * dk..(h + 1) * dk];
        let scores: Vec<f64> = (first..=pos)
            .map(|j| {
                let kv = &k[(j * nkv + kh) * dk..(j * nkv + kh + 1) * dk];
                qv.iter().zip(kv).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum::<f64>() * f64::from(scale)
            })
            .collect();
        let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        for (j, p) in (first..=pos).zip(&e) {
            for d in 0..dv {
                y[h * dv + d] += p / sum * f64::from(v[(j * nkv + kh) * dv + d]);
            }
        }
    }
    y
}

#[test]
fn kv_cache_write_places_rows_through_the_block_table_and_skips_padding() {
    let be = be();
    let mut rng = Rng::new(21);
    let (s, n, d) = (3, 2, 4);
    let paging = Paging::new(&mut rng, s, 3, 2);
    let mut cache = f32t(vec![7.0; paging.blocks * paging.bs * n * d], &[paging.blocks, paging.bs, n, d]);
    let x = rng.f32s(4 * n * d);
    let (slots, pos) = (vec![2, PAD_SLOT, 0, 2], vec![4, 0, 0, 1]);
    let table = u32t(paging.table.clone(), &[s, paging.max_blocks]);
    let (st, pt) = (u32t(slots.clone(), &[4]), u32t(pos.clone(), &[4]));
    be.kv_cache_write(&f32t(x.clone(), &[4, n, d]), &mut cache, &KvIndex { block_table: &table, slots: &st, positions: &pt }).expect("write");
    let mut want = vec![7.0; paging.blocks * paging.bs * n * d];
    for (i, (&sl, &p)) in slots.iter().zip(&pos).enumerate().filter(|(_, (s, _))| **s != PAD_SLOT) {
        let at = paging.pool_row(sl as usize, p as usize) * n * d;
        want[at..at + n * d].copy_from_slice(&x[i * n * d..(i + 1) * n * d]);
    }
    assert_eq!(data(&cache), &want[..], "rows land in their slot's block; the padding row writes nothing");
}

/// One attention case: heads, kv heads, dk, dv, block size, blocks per slot, scale, window,
/// rows as (slot, position).
type Case = (usize, usize, usize, usize, usize, usize, f32, Option<u32>, Vec<(u32, u32)>);

#[test]
fn kv_cache_attention_matches_f64_reference() {
    let be = be();
    let mut rng = Rng::new(20);
    // Decode rows of several slots with padding between them, a prefill (consecutive positions
    // of one slot, causal) next to decode rows, GQA, dk != dv, odd dims, sliding windows (short,
    // and longer than the sequence), one large enough for the pool, and huge scores (a softmax
    // without the max subtraction would overflow to inf/NaN).
    let pad = (PAD_SLOT, 0);
    let cases: Vec<Case> = vec![
        (4, 4, 8, 8, 4, 1, 0.35, None, vec![(0, 0)]),
        (8, 2, 16, 12, 4, 3, 0.25, None, vec![(1, 5), pad, (0, 9), (2, 0)]),
        (6, 3, 7, 9, 3, 3, 0.4, Some(3), vec![(0, 0), (0, 1), (0, 2), (0, 3), (1, 6), pad]),
        (4, 1, 32, 16, 16, 4, 0.18, Some(100), vec![(0, 40)]),
        (8, 2, 64, 48, 16, 8, 0.125, None, (0..6).map(|i| (1, 100 + i)).chain([(0, 7), pad]).collect()),
        (8, 2, 64, 48, 16, 8, 0.125, Some(17), (0..6).map(|i| (1, 100 + i)).chain([(2, 16)]).collect()),
        (2, 1, 4, 4, 2, 3, 400.0, None, vec![(0, 3), (0, 4)]),
        (4, 2, 8, 8, 2, 2, 1.0, None, vec![]),
        (4, 2, 8, 8, 2, 2, 1.0, None, vec![pad, pad]),
    ];
    for (nh, nkv, dk, dv, bs, mb, scale, window, rows) in cases {
        let (s, t, l) = (3, rows.len(), bs * mb);
        let paging = Paging::new(&mut rng, s, mb, bs);
        let (kc, vc) = (rng.f32s(s * l * nkv * dk), rng.f32s(s * l * nkv * dv));
        let (kp, vp) = (paging.scatter(&kc, s, nkv * dk, f32::NAN), paging.scatter(&vc, s, nkv * dv, f32::NAN));
        let q = rng.f32s(t * nh * dk);
        let (slots, pos): (Vec<u32>, Vec<u32>) = rows.iter().copied().unzip();
        let (table, st, pt) = (u32t(paging.table.clone(), &[s, mb]), u32t(slots, &[t]), u32t(pos, &[t]));
        let mut y = f32t(vec![f32::NAN; t * nh * dv], &[t, nh, dv]);
        be.kv_cache_attention(
            &f32t(q.clone(), &[t, nh, dk]),
            &f32t(kp, &[paging.blocks, bs, nkv, dk]),
            &f32t(vp, &[paging.blocks, bs, nkv, dv]),
            &KvIndex { block_table: &table, slots: &st, positions: &pt },
            &AttentionParams { scale, sliding_window: window },
            &mut y,
        )
        .expect("attention");
        for (r, &(slot, p)) in rows.iter().enumerate() {
            let got = &data(&y)[r * nh * dv..(r + 1) * nh * dv];
            if slot == PAD_SLOT {
                assert!(got.iter().all(|&v| v == 0.0), "padding row {r} must be zeros");
                continue;
            }
            let first = window.map_or(0, |w| (p as usize + 1).saturating_sub(w as usize));
            let base = slot as usize * l * nkv;
            let want = attention_ref(&q[r * nh * dk..], &kc[base * dk..], &vc[base * dv..], (nh, nkv, dk, dv), p as usize, first, scale);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                // Outputs are convex combinations of values in [-1, 1): an absolute tolerance is
                // a relative one. Huge scores amplify f32 score rounding, hence the looser case.
                let tol = if scale > 10.0 { 1e-3 } else { 1e-5 };
                assert!(
                    (f64::from(*g) - w).abs() <= tol,
                    "nh={nh} nkv={nkv} dk={dk} dv={dv} window {window:?} row {r} (slot {slot}, pos {p}) [{i}]: {g} vs {w} (tol {tol} abs)"
                );
            }
        }
    }
}

#[test]
fn kv_cache_kernels_reject_bad_shapes_dtypes_and_rows() {
    let be = be();
    let z = |s: &[usize]| f32t(vec![0.0; s.iter().product()], s);
    // A pool of 3 blocks of 2 rows; 2 slots of 2 blocks each (slot 1 owns blocks 2 and 0).
    let (q, k, v) = (z(&[2, 4, 8]), z(&[3, 2, 2, 8]), z(&[3, 2, 2, 6]));
    let table = u32t(vec![1, 0, 2, 0], &[2, 2]);
    let (slots, pos) = (u32t(vec![0, 1], &[2]), u32t(vec![3, 2], &[2]));
    let mut y = z(&[2, 4, 6]);
    let p = AttentionParams { scale: 1.0, sliding_window: None };
    let att = |q: &CpuTensor, k: &CpuTensor, v: &CpuTensor, tb: &CpuTensor, s: &CpuTensor, ps: &CpuTensor, y: &mut CpuTensor| {
        be.kv_cache_attention(q, k, v, &KvIndex { block_table: tb, slots: s, positions: ps }, &p, y)
    };
    assert!(att(&q, &k, &v, &table, &slots, &pos, &mut y).is_ok(), "the well-formed call");
    assert!(is_shape_err(att(&q, &k, &v, &table, &slots, &u32t(vec![3, 4], &[2]), &mut y)), "position 4 past 2 blocks of 2");
    assert!(is_shape_err(att(&q, &k, &v, &table, &u32t(vec![0, 2], &[2]), &pos, &mut y)), "slot 2 of a 2-slot table");
    assert!(is_shape_err(att(&q, &k, &v, &u32t(vec![1, 0, 2, 3], &[2, 2]), &slots, &pos, &mut y)), "block 3 of a 3-block pool");
    assert!(is_shape_err(att(&q, &k, &v, &table, &u32t(vec![0], &[1]), &u32t(vec![0], &[1]), &mut y)), "1 slot for 2 rows");
    assert!(is_shape_err(att(&q, &k, &v, &u32t(vec![1, 0, 2, 0], &[4]), &slots, &pos, &mut y)), "a 1-D block table");
    assert!(is_shape_err(att(&z(&[2, 3, 8]), &k, &v, &table, &slots, &pos, &mut z(&[2, 3, 6]))), "3 heads over 2 kv heads");
    assert!(is_shape_err(att(&q, &z(&[3, 2, 2, 7]), &v, &table, &slots, &pos, &mut y)), "dk 8 vs 7");
    assert!(is_shape_err(att(&q, &k, &z(&[3, 1, 2, 6]), &table, &slots, &pos, &mut y)), "k and v blocks differ");
    assert!(is_shape_err(att(&q, &k, &v, &table, &slots, &pos, &mut z(&[2, 4, 8]))), "y with dk instead of dv");
    assert!(is_shape_err(att(&z(&[8, 8]), &k, &v, &table, &slots, &pos, &mut y)), "2-D q");
    assert!(is_shape_err(att(&q, &z(&[6, 2, 8]), &v, &table, &slots, &pos, &mut y)), "3-D cache");
    let (kb, _) = typed(&[0.0; 96], &[3, 2, 2, 8], DType::BF16);
    assert!(is_dtype_err(att(&q, &kb, &v, &table, &slots, &pos, &mut y)), "bf16 k");
    assert!(is_shape_err(att(&q, &k, &v, &table, &z(&[2]), &pos, &mut y)), "f32 slots");
    let mut kc = z(&[3, 2, 2, 8]);
    let ix = KvIndex { block_table: &table, slots: &slots, positions: &pos };
    assert!(be.kv_cache_write(&z(&[2, 2, 8]), &mut kc, &ix).is_ok(), "the well-formed write");
    assert!(is_shape_err(be.kv_cache_write(&z(&[2, 2, 7]), &mut kc, &ix)), "rows of 7 into a cache of 8");
    let far = u32t(vec![0, 5], &[2]);
    assert!(is_shape_err(be.kv_cache_write(&z(&[2, 2, 8]), &mut kc, &KvIndex { block_table: &table, slots: &slots, positions: &far })), "write past the slot's blocks");
}
