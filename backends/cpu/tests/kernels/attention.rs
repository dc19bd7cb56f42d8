//! Causal GQA attention against an f64 reference, and its error paths.

use finetp_core::backend::{DType, Kernels};

use super::{Rng, be, data, f32t, is_dtype_err, is_shape_err, typed};

/// `y [t, nh, dv]` in f64: query row `i` at position `past + i` sees keys `0..=past + i`.
#[allow(clippy::too_many_arguments)]
fn attention_ref(q: &[f32], k: &[f32], v: &[f32], t: usize, nh: usize, nkv: usize, dk: usize, dv: usize, past: usize, scale: f32) -> Vec<f64> {
    let mut y = vec![0f64; t * nh * dv];
    for i in 0..t {
        for h in 0..nh {
            let kh = h / (nh / nkv);
            let qv = &q[(i * nh + h) * dk..(i * nh + h + 1) * dk];
            let scores: Vec<f64> = (0..=past + i)
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
                    y[(i * nh + h) * dv + d] += p / sum * f64::from(v[(j * nkv + kh) * dv + d]);
                }
            }
        }
    }
    y
}

#[test]
fn attention_matches_f64_reference() {
    let be = be();
    let mut rng = Rng::new(20);
    // (T, heads, kv heads, dk, dv, past, cache rows, scale): decode, prefill with past, GQA,
    // dk != dv, odd dims, a cache larger than needed, one large enough for the pool, and huge
    // scores (a softmax without the max subtraction would overflow to inf/NaN).
    let cases = [
        (1, 4, 4, 8, 8, 0, 1, 0.35),
        (3, 8, 2, 16, 12, 5, 10, 0.25),
        (5, 6, 3, 7, 9, 0, 5, 0.4),
        (1, 4, 1, 32, 16, 40, 64, 0.18),
        (6, 8, 2, 64, 48, 100, 128, 0.125),
        (2, 2, 1, 4, 4, 3, 5, 400.0),
        (0, 4, 2, 8, 8, 3, 3, 1.0),
    ];
    for (t, nh, nkv, dk, dv, past, s, scale) in cases {
        let (q, k, v) = (rng.f32s(t * nh * dk), rng.f32s(s * nkv * dk), rng.f32s(s * nkv * dv));
        let mut y = f32t(vec![f32::NAN; t * nh * dv], &[t, nh, dv]);
        be.attention(&f32t(q.clone(), &[t, nh, dk]), &f32t(k.clone(), &[s, nkv, dk]), &f32t(v.clone(), &[s, nkv, dv]), past, scale, &mut y)
            .expect("attention");
        let want = attention_ref(&q, &k, &v, t, nh, nkv, dk, dv, past, scale);
        for (i, (g, w)) in data(&y).iter().zip(&want).enumerate() {
            // Outputs are convex combinations of values in [-1, 1): an absolute tolerance is
            // a relative one. Huge scores amplify f32 score rounding, hence the looser case.
            let tol = if scale > 10.0 { 1e-3 } else { 1e-5 };
            assert!((f64::from(*g) - w).abs() <= tol, "T={t} nh={nh} nkv={nkv} dk={dk} dv={dv} past={past} [{i}]: {g} vs {w} (tol {tol} abs)");
        }
    }
}

#[test]
fn attention_rejects_bad_shapes_and_dtypes() {
    let be = be();
    let z = |s: &[usize]| f32t(vec![0.0; s.iter().product()], s);
    let (q, k, v) = (z(&[2, 4, 8]), z(&[5, 2, 8]), z(&[5, 2, 6]));
    let mut y = z(&[2, 4, 6]);
    assert!(be.attention(&q, &k, &v, 3, 1.0, &mut y).is_ok(), "the well-formed call");
    assert!(is_shape_err(be.attention(&q, &k, &v, 4, 1.0, &mut y)), "past + T = 6 > 5 cache rows");
    assert!(is_shape_err(be.attention(&z(&[2, 3, 8]), &k, &v, 0, 1.0, &mut z(&[2, 3, 6]))), "3 heads over 2 kv heads");
    assert!(is_shape_err(be.attention(&q, &z(&[5, 2, 7]), &v, 0, 1.0, &mut y)), "dk 8 vs 7");
    assert!(is_shape_err(be.attention(&q, &k, &z(&[4, 2, 6]), 0, 1.0, &mut y)), "k and v rows differ");
    assert!(is_shape_err(be.attention(&q, &k, &v, 0, 1.0, &mut z(&[2, 4, 8]))), "y with dk instead of dv");
    assert!(is_shape_err(be.attention(&z(&[8, 8]), &k, &v, 0, 1.0, &mut y)), "2-D q");
    assert!(is_shape_err(be.attention(&z(&[2, 0, 8]), &z(&[5, 0, 8]), &z(&[5, 0, 6]), 0, 1.0, &mut z(&[2, 0, 6]))), "zero kv heads");
    let (kb, _) = typed(&[0.0; 80], &[5, 2, 8], DType::BF16);
    assert!(is_dtype_err(be.attention(&q, &kb, &v, 0, 1.0, &mut y)), "bf16 k");
}
