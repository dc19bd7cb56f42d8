//! The KV-cache kernels: `kv_cache_write` places rows exactly, and `kv_cache_attention` (causal,
//! GQA, many sequences and padding in one call) matches an f64 reference; then the error paths.

use finetp_core::backend::{DType, Kernels, PAD_SLOT, Tensor};

use super::{Rng, be, data, f32t, is_dtype_err, is_shape_err, typed};
use finetp_backend_cpu::{CpuStorage, CpuTensor};

fn u32t(v: Vec<u32>) -> CpuTensor {
    let n = v.len();
    Tensor::from_parts(CpuStorage::U32(v), vec![n], DType::U32)
}

/// One query row: `y [nh, dv]` in f64 over keys `0..=pos` of `k`/`v` `[L, nkv, d]` (one slot).
#[allow(clippy::too_many_arguments)]
fn attention_ref(q: &[f32], k: &[f32], v: &[f32], nh: usize, nkv: usize, dk: usize, dv: usize, pos: usize, scale: f32) -> Vec<f64> {
    let mut y = vec![0f64; nh * dv];
    for h in 0..nh {
        let kh = h / (nh / nkv);
        let qv = &q[h * dk..(h + 1) * dk];
        let scores: Vec<f64> = (0..=pos)
            .map(|j| {
                let kv = &k[(j * nkv + kh) * dk..(j * nkv + kh + 1) * dk];
                qv.iter().zip(kv).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum::<f64>() * f64::from(scale)
            })
            .collect();
        let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        for (j, p) in e.iter().enumerate() {
            for d in 0..dv {
                y[h * dv + d] += p / sum * f64::from(v[(j * nkv + kh) * dv + d]);
            }
        }
    }
    y
}

#[test]
fn kv_cache_write_places_rows_and_skips_padding() {
    let be = be();
    let mut rng = Rng::new(21);
    let (s, l, n, d) = (3, 5, 2, 4);
    let mut cache = f32t(vec![7.0; s * l * n * d], &[s, l, n, d]);
    let x = rng.f32s(4 * n * d);
    let (slots, pos) = (vec![2, PAD_SLOT, 0, 2], vec![4, 0, 0, 1]);
    be.kv_cache_write(&f32t(x.clone(), &[4, n, d]), &mut cache, &u32t(slots.clone()), &u32t(pos.clone())).expect("write");
    let mut want = vec![7.0; s * l * n * d];
    for (i, (&sl, &p)) in slots.iter().zip(&pos).enumerate().filter(|(_, (s, _))| **s != PAD_SLOT) {
        let at = (sl as usize * l + p as usize) * n * d;
        want[at..at + n * d].copy_from_slice(&x[i * n * d..(i + 1) * n * d]);
    }
    assert_eq!(data(&cache), &want[..], "rows land at (slot, position); the padding row writes nothing");
}

/// One attention case: heads, kv heads, dk, dv, cache rows per slot, scale, rows as
/// (slot, position).
type Case = (usize, usize, usize, usize, usize, f32, Vec<(u32, u32)>);

#[test]
fn kv_cache_attention_matches_f64_reference() {
    let be = be();
    let mut rng = Rng::new(20);
    // (heads, kv heads, dk, dv, cache rows, scale, rows as (slot, position)): decode rows of
    // several slots with padding between them, a prefill (consecutive positions of one slot,
    // causal) next to decode rows, GQA, dk != dv, odd dims, one large enough for the pool, and
    // huge scores (a softmax without the max subtraction would overflow to inf/NaN).
    let pad = (PAD_SLOT, 0);
    let cases: Vec<Case> = vec![
        (4, 4, 8, 8, 4, 0.35, vec![(0, 0)]),
        (8, 2, 16, 12, 10, 0.25, vec![(1, 5), pad, (0, 9), (2, 0)]),
        (6, 3, 7, 9, 8, 0.4, vec![(0, 0), (0, 1), (0, 2), (0, 3), (1, 6), pad]),
        (4, 1, 32, 16, 64, 0.18, vec![(0, 40)]),
        (8, 2, 64, 48, 128, 0.125, (0..6).map(|i| (1, 100 + i)).chain([(0, 7), pad]).collect()),
        (2, 1, 4, 4, 5, 400.0, vec![(0, 3), (0, 4)]),
        (4, 2, 8, 8, 3, 1.0, vec![]),
        (4, 2, 8, 8, 3, 1.0, vec![pad, pad]),
    ];
    for (nh, nkv, dk, dv, l, scale, rows) in cases {
        let s = 3;
        let t = rows.len();
        let (kc, vc) = (rng.f32s(s * l * nkv * dk), rng.f32s(s * l * nkv * dv));
        let q = rng.f32s(t * nh * dk);
        let (slots, pos): (Vec<u32>, Vec<u32>) = rows.iter().copied().unzip();
        let mut y = f32t(vec![f32::NAN; t * nh * dv], &[t, nh, dv]);
        be.kv_cache_attention(
            &f32t(q.clone(), &[t, nh, dk]),
            &f32t(kc.clone(), &[s, l, nkv, dk]),
            &f32t(vc.clone(), &[s, l, nkv, dv]),
            &u32t(slots),
            &u32t(pos),
            scale,
            &mut y,
        )
        .expect("attention");
        for (r, &(slot, p)) in rows.iter().enumerate() {
            let got = &data(&y)[r * nh * dv..(r + 1) * nh * dv];
            if slot == PAD_SLOT {
                assert!(got.iter().all(|&v| v == 0.0), "padding row {r} must be zeros");
                continue;
            }
            let (ks, vs) = (slot as usize * l * nkv, slot as usize * l * nkv);
            let want = attention_ref(&q[r * nh * dk..], &kc[ks * dk..], &vc[vs * dv..], nh, nkv, dk, dv, p as usize, scale);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                // Outputs are convex combinations of values in [-1, 1): an absolute tolerance is
                // a relative one. Huge scores amplify f32 score rounding, hence the looser case.
                let tol = if scale > 10.0 { 1e-3 } else { 1e-5 };
                assert!((f64::from(*g) - w).abs() <= tol, "nh={nh} nkv={nkv} dk={dk} dv={dv} row {r} (slot {slot}, pos {p}) [{i}]: {g} vs {w} (tol {tol} abs)");
            }
        }
    }
}

#[test]
fn kv_cache_kernels_reject_bad_shapes_and_dtypes() {
    let be = be();
    let z = |s: &[usize]| f32t(vec![0.0; s.iter().product()], s);
    let (q, k, v) = (z(&[2, 4, 8]), z(&[2, 5, 2, 8]), z(&[2, 5, 2, 6]));
    let (slots, pos) = (u32t(vec![0, 1]), u32t(vec![3, 4]));
    let mut y = z(&[2, 4, 6]);
    let att = |q: &CpuTensor, k: &CpuTensor, v: &CpuTensor, s: &CpuTensor, p: &CpuTensor, y: &mut CpuTensor| be.kv_cache_attention(q, k, v, s, p, 1.0, y);
    assert!(att(&q, &k, &v, &slots, &pos, &mut y).is_ok(), "the well-formed call");
    assert!(is_shape_err(att(&q, &k, &v, &slots, &u32t(vec![3, 5]), &mut y)), "position 5 of a 5-row cache");
    assert!(is_shape_err(att(&q, &k, &v, &u32t(vec![0, 2]), &pos, &mut y)), "slot 2 of 2");
    assert!(is_shape_err(att(&q, &k, &v, &u32t(vec![0]), &u32t(vec![0]), &mut y)), "1 slot for 2 rows");
    assert!(is_shape_err(att(&z(&[2, 3, 8]), &k, &v, &slots, &pos, &mut z(&[2, 3, 6]))), "3 heads over 2 kv heads");
    assert!(is_shape_err(att(&q, &z(&[2, 5, 2, 7]), &v, &slots, &pos, &mut y)), "dk 8 vs 7");
    assert!(is_shape_err(att(&q, &k, &z(&[2, 4, 2, 6]), &slots, &pos, &mut y)), "k and v rows differ");
    assert!(is_shape_err(att(&q, &k, &v, &slots, &pos, &mut z(&[2, 4, 8]))), "y with dk instead of dv");
    assert!(is_shape_err(att(&z(&[8, 8]), &k, &v, &slots, &pos, &mut y)), "2-D q");
    assert!(is_shape_err(att(&q, &z(&[10, 2, 8]), &v, &slots, &pos, &mut y)), "3-D cache");
    let (kb, _) = typed(&[0.0; 160], &[2, 5, 2, 8], DType::BF16);
    assert!(is_dtype_err(att(&q, &kb, &v, &slots, &pos, &mut y)), "bf16 k");
    assert!(is_dtype_err(att(&q, &k, &v, &z(&[2]), &pos, &mut y)), "f32 slots");
    let mut kc = z(&[2, 5, 2, 8]);
    assert!(be.kv_cache_write(&z(&[2, 2, 8]), &mut kc, &slots, &pos).is_ok(), "the well-formed write");
    assert!(is_shape_err(be.kv_cache_write(&z(&[2, 2, 7]), &mut kc, &slots, &pos)), "rows of 7 into a cache of 8");
    assert!(is_shape_err(be.kv_cache_write(&z(&[2, 2, 8]), &mut kc, &slots, &u32t(vec![0, 5]))), "write past the cache");
}
