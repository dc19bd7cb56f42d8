//! `linear` against an f64 reference, their determinism across shardings
//! and batch sizes, and their error paths.

use finetp_core::backend::{DType, Gemm};
use proptest::prelude::*;

use super::{FLOATS, Rng, be, data, f32t, is_dtype_err, is_shape_err, typed};

/// `(y, Σ|x·w| + |bias|)` per output in f64, from the weights as stored.
fn linear_ref(x: &[f32], w: &[f32], bias: Option<&[f32]>, m: usize, n: usize, k: usize) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            let b = bias.map_or(0.0, |b| f64::from(b[j]));
            let (mut s, mut mag) = (b, b.abs());
            for l in 0..k {
                let p = f64::from(x[i * k + l]) * f64::from(w[j * k + l]);
                s += p;
                mag += p.abs();
            }
            out.push((s, mag));
        }
    }
    out
}

fn check(what: &str, got: &[f32], want: &[(f64, f64)]) {
    assert_eq!(got.len(), want.len(), "{what}: output length");
    for (i, (g, (w, mag))) in got.iter().zip(want).enumerate() {
        let err = (f64::from(*g) - w).abs();
        assert!(err <= 1e-5 * mag + 1e-30, "{what} [{i}]: {g} vs {w}, error {err:e} > 1e-5 · Σ|x·w| = {:e}", 1e-5 * mag);
    }
}

/// One `linear` call on random data against the reference; `y` starts as NaN so stale values
/// would show.
fn run_linear(rng: &mut Rng, m: usize, n: usize, k: usize, dt: DType, with_bias: bool) {
    let be = be();
    let x = rng.f32s(m * k);
    let (w, wr) = typed(&rng.f32s(n * k), &[n, k], dt);
    let bias = with_bias.then(|| rng.f32s(n));
    let mut y = f32t(vec![f32::NAN; m * n], &[m, n]);
    let bt = bias.clone().map(|b| f32t(b, &[n]));
    be.linear(&f32t(x.clone(), &[m, k]), &w, bt.as_ref(), &mut y).expect("linear");
    check(&format!("linear m={m} n={n} k={k} {dt} bias={with_bias}"), data(&y), &linear_ref(&x, &wr, bias.as_deref(), m, n, k));
}

#[test]
fn linear_matches_f64_reference_for_every_weight_dtype() {
    let mut rng = Rng::new(10);
    // m = 0 and 1, odd sizes, k past one k-block (1024) and not a multiple of 8, m past one
    // row block (64), n past one task (so the pool splits it), n = 0, k = 0.
    let shapes = [
        (0, 5, 7),
        (1, 1, 1),
        (1, 37, 1029),
        (3, 5, 8),
        (5, 13, 17),
        (4, 9, 2051),
        (7, 21, 64),
        (70, 11, 33),
        (1, 300, 64),
        (9, 130, 100),
        (2, 0, 5),
        (3, 4, 0),
    ];
    for (m, n, k) in shapes {
        for dt in FLOATS {
            run_linear(&mut rng, m, n, k, dt, false);
            run_linear(&mut rng, m, n, k, dt, true);
        }
    }
}

#[test]
fn linear_rows_do_not_depend_on_batch_or_sharding() {
    // Column-sharded layers must give the unsharded layer's outputs bit for bit, and a token's
    // output must not change with the batch it is in.
    let be = be();
    let mut rng = Rng::new(11);
    let (m, n, k) = (13, 70, 1100);
    for dt in FLOATS {
        let x = rng.f32s(m * k);
        let wv = rng.f32s(n * k);
        let (w, _) = typed(&wv, &[n, k], dt);
        let mut full = f32t(vec![0.0; m * n], &[m, n]);
        be.linear(&f32t(x.clone(), &[m, k]), &w, None, &mut full).expect("full");
        for i in [0, 5, 12] {
            let mut one = f32t(vec![0.0; n], &[1, n]);
            be.linear(&f32t(x[i * k..(i + 1) * k].to_vec(), &[1, k]), &w, None, &mut one).expect("one row");
            assert_eq!(data(&one), &data(&full)[i * n..(i + 1) * n], "{dt}: row {i} alone vs in a batch of {m} (bitwise)");
        }
        let (j0, j1) = (23, 61);
        let (ws, _) = typed(&wv[j0 * k..j1 * k], &[j1 - j0, k], dt);
        let mut shard = f32t(vec![0.0; m * (j1 - j0)], &[m, j1 - j0]);
        be.linear(&f32t(x.clone(), &[m, k]), &ws, None, &mut shard).expect("shard");
        for i in 0..m {
            assert_eq!(&data(&shard)[i * (j1 - j0)..(i + 1) * (j1 - j0)], &data(&full)[i * n + j0..i * n + j1], "{dt}: shard rows {j0}..{j1} (bitwise)");
        }
    }
}

#[test]
fn linear_walk_orders_and_row_blocks_agree_bitwise() {
    // How a task walks its weights depends on the size of the packed activations (whole rows up
    // to 512 KiB, block by block above), and more than 256 activation rows are cut into row
    // blocks: a token's outputs must be the same bits whichever way they were computed (alone,
    // a row is always walked whole), and right.
    let be = be();
    let mut rng = Rng::new(13);
    for (m, n, k) in [(40, 37, 4009), (260, 11, 603)] {
        for dt in FLOATS {
            let x = rng.f32s(m * k);
            let (w, wr) = typed(&rng.f32s(n * k), &[n, k], dt);
            let mut full = f32t(vec![f32::NAN; m * n], &[m, n]);
            be.linear(&f32t(x.clone(), &[m, k]), &w, None, &mut full).expect("batch");
            check(&format!("linear m={m} n={n} k={k} {dt}"), data(&full), &linear_ref(&x, &wr, None, m, n, k));
            for i in [0, 17, m - 1] {
                let mut one = f32t(vec![0.0; n], &[1, n]);
                be.linear(&f32t(x[i * k..(i + 1) * k].to_vec(), &[1, k]), &w, None, &mut one).expect("one row");
                assert_eq!(data(&one), &data(&full)[i * n..(i + 1) * n], "{dt}: row {i} alone vs in a batch of {m}, k = {k} (bitwise)");
            }
        }
    }
}

#[test]
fn gemm_rejects_bad_shapes_and_dtypes() {
    let be = be();
    let x = f32t(vec![0.0; 6], &[2, 3]);
    let w = f32t(vec![0.0; 12], &[4, 3]);
    let mut y = f32t(vec![0.0; 8], &[2, 4]);
    assert!(be.linear(&x, &w, None, &mut y).is_ok(), "the well-formed call");
    assert!(is_shape_err(be.linear(&f32t(vec![0.0; 6], &[1, 2, 3]), &w, None, &mut y)), "3-D x");
    assert!(is_shape_err(be.linear(&f32t(vec![0.0; 8], &[2, 4]), &w, None, &mut y)), "k mismatch");
    assert!(is_shape_err(be.linear(&x, &w, None, &mut f32t(vec![0.0; 8], &[4, 2]))), "y transposed");
    assert!(is_shape_err(be.linear(&x, &w, Some(&f32t(vec![0.0; 3], &[3])), &mut y)), "bias of 3 for n = 4");
    let (wu, _) = typed(&[0.0; 12], &[4, 3], DType::U32);
    assert!(is_dtype_err(be.linear(&x, &wu, None, &mut y)), "u32 weights");
    let (xb, _) = typed(&[0.0; 6], &[2, 3], DType::BF16);
    assert!(is_dtype_err(be.linear(&xb, &w, None, &mut y)), "bf16 x");
    let (bb, _) = typed(&[0.0; 4], &[4], DType::BF16);
    assert!(is_dtype_err(be.linear(&x, &w, Some(&bb), &mut y)), "bf16 bias");
    let (mut yh, _) = typed(&[0.0; 8], &[2, 4], DType::F16);
    assert!(is_dtype_err(be.linear(&x, &w, None, &mut yh)), "f16 y");

}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// Random small shapes and dtypes against the reference (tol 1e-5 · Σ|x·w|).
    #[test]
    fn linear_random_shapes(m in 0usize..9, n in 0usize..40, k in 0usize..80, dt in 0usize..3, bias: bool, seed: u64) {
        run_linear(&mut Rng::new(seed), m, n, k, FLOATS[dt], bias);
    }
}
