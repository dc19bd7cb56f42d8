//! The CPU GEMM and decoder kernels against naive f64 references on random inputs, plus the
//! error paths: a bad shape or dtype must come back as an `Err`, never a panic.
//!
//! Tolerances (stated again in each assert message):
//! - GEMM: `|y - ref| <= 1e-5 · Σ|x·w|` (relative to the magnitude of the summed terms, so a
//!   result that cancels to ~0 is judged fairly). 16-bit weights are compared with the reference
//!   computed from the *rounded* weights, so the kernel is tested, not the rounding.
//! - Kernels: `1e-5` relative to the reference's scale (stated per test); exact where the kernel
//!   only copies or does one f32 operation.

use finetp_backend_cpu::{CpuBackend, CpuStorage, CpuTensor};
use finetp_core::backend::{BackendError, DType, Gemm, Kernels, MoeRouting, RopeStyle, RopeTable, SampleParams, Tensor};
use finetp_core::config::{MoeScoring, TopkMethod};
use half::{bf16, f16};
use proptest::prelude::*;

#[path = "kernels/gemm.rs"]
mod gemm;
#[path = "kernels/attention.rs"]
mod attention;

pub use finetp_testkit::Rng;

/// A 2-thread backend, so the parallel paths run.
pub fn be() -> CpuBackend {
    CpuBackend::new(2).expect("pool")
}

pub fn f32t(v: Vec<f32>, shape: &[usize]) -> CpuTensor {
    assert_eq!(v.len(), shape.iter().product::<usize>(), "test bug: data does not fit {shape:?}");
    Tensor::from_parts(CpuStorage::F32(v), shape.to_vec(), DType::F32)
}

/// `v` stored as `dtype`, and the values actually stored (rounded), widened back to f32.
pub fn typed(v: &[f32], shape: &[usize], dtype: DType) -> (CpuTensor, Vec<f32>) {
    let (buf, rounded): (CpuStorage, Vec<f32>) = match dtype {
        DType::F32 => (CpuStorage::F32(v.to_vec()), v.to_vec()),
        DType::BF16 => {
            let h: Vec<bf16> = v.iter().map(|&x| bf16::from_f32(x)).collect();
            let r = h.iter().map(|x| x.to_f32()).collect();
            (CpuStorage::BF16(h), r)
        }
        DType::F16 => {
            let h: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
            let r = h.iter().map(|x| x.to_f32()).collect();
            (CpuStorage::F16(h), r)
        }
        _ => (CpuStorage::U32(vec![0; v.len()]), vec![0.0; v.len()]),
    };
    (Tensor::from_parts(buf, shape.to_vec(), dtype), rounded)
}

pub fn u32s(v: &[u32]) -> CpuTensor {
    Tensor::from_parts(CpuStorage::U32(v.to_vec()), vec![v.len()], DType::U32)
}

pub fn data(t: &CpuTensor) -> &[f32] {
    t.buffer().as_f32("test").expect("f32 tensor")
}

pub fn is_shape_err<T: std::fmt::Debug>(r: Result<T, BackendError>) -> bool {
    matches!(r, Err(BackendError::Shape(_)))
}

pub fn is_dtype_err<T: std::fmt::Debug>(r: Result<T, BackendError>) -> bool {
    matches!(r, Err(BackendError::DType { .. }))
}

pub const FLOATS: [DType; 3] = [DType::F32, DType::BF16, DType::F16];

/// A RoPE table of `inv_freq`.
pub fn table(inv_freq: Vec<f32>, style: RopeStyle, attention_factor: f32) -> RopeTable<CpuBackend> {
    let n = inv_freq.len();
    RopeTable { inv_freq: f32t(inv_freq, &[n]), style, attention_factor }
}

#[test]
fn embedding_looks_up_its_shard_and_zeroes_the_rest() {
    let be = be();
    let mut rng = Rng::new(1);
    let (vs, h, start) = (7, 5, 10);
    let ids = Tensor::from_parts(CpuStorage::U32(vec![9, 10, 16, 17, 13, 0, 100]), vec![7], DType::U32);
    for dt in FLOATS {
        let (table, rounded) = typed(&rng.f32s(vs * h), &[vs, h], dt);
        let mut y = f32t(vec![f32::NAN; 7 * h], &[7, h]);
        be.embedding(&ids, &table, start, &mut y).expect("embedding");
        for (t, id) in [9usize, 10, 16, 17, 13, 0, 100].into_iter().enumerate() {
            let want: Vec<f32> = match id.checked_sub(start).filter(|&r| r < vs) {
                Some(r) => rounded[r * h..(r + 1) * h].to_vec(),
                None => vec![0.0; h],
            };
            assert_eq!(&data(&y)[t * h..(t + 1) * h], &want[..], "{dt}: id {id} (exact copy expected)");
        }
    }
    let mut y = f32t(vec![0.0; 7 * h], &[7, h]);
    let (table, _) = typed(&rng.f32s(vs * h), &[vs, h], DType::F32);
    let bad_ids = f32t(vec![0.0; 7], &[7]);
    assert!(is_dtype_err(be.embedding(&bad_ids, &table, 0, &mut y)), "f32 ids must be a dtype error");
    let (u32_table, _) = typed(&[0.0; 35], &[vs, h], DType::U32);
    assert!(is_dtype_err(be.embedding(&ids, &u32_table, 0, &mut y)), "u32 table must be a dtype error");
    let mut short = f32t(vec![0.0; 6 * h], &[6, h]);
    assert!(is_shape_err(be.embedding(&ids, &table, 0, &mut short)), "y with too few rows");
    let flat = f32t(vec![0.0; 35], &[35]);
    assert!(is_shape_err(be.embedding(&ids, &flat, 0, &mut y)), "1-D table");
}

fn rms_ref(x: &[f32], w: &[f32], eps: f32) -> Vec<f64> {
    let h = w.len();
    x.chunks(h)
        .flat_map(|r| {
            let ms = r.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / h as f64;
            let inv = 1.0 / (ms + f64::from(eps)).sqrt();
            r.iter().zip(w).map(move |(&v, &g)| f64::from(v) * inv * f64::from(g)).collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn rms_norm_matches_f64_reference() {
    let be = be();
    let mut rng = Rng::new(2);
    // [T, H], [T, n, H] (per-head norm), and one large enough for the parallel path.
    for shape in [vec![3, 37], vec![2, 3, 16], vec![1, 1], vec![0, 8], vec![300, 256]] {
        let h = *shape.last().expect("non-empty shape");
        let n: usize = shape.iter().product();
        for dt in FLOATS {
            let x = rng.f32s(n);
            let (w, wr) = typed(&rng.f32s(h), &[h], dt);
            let mut y = f32t(vec![f32::NAN; n], &shape);
            be.rms_norm(&f32t(x.clone(), &shape), &w, 1e-6, &mut y).expect("rms_norm");
            for (i, (got, want)) in data(&y).iter().zip(rms_ref(&x, &wr, 1e-6)).enumerate() {
                assert!((f64::from(*got) - want).abs() <= 1e-5 * want.abs() + 1e-6, "{shape:?} {dt} [{i}]: {got} vs {want} (tol 1e-5 rel + 1e-6)");
            }
        }
    }
    let (w, _) = typed(&[1.0; 8], &[8], DType::F32);
    let mut y = f32t(vec![0.0; 16], &[2, 8]);
    assert!(is_shape_err(be.rms_norm(&f32t(vec![0.0; 16], &[1, 16]), &w, 1e-6, &mut y)), "x [1,16] with w [8]: last dim must be H");
    assert!(is_shape_err(be.rms_norm(&f32t(vec![0.0; 16], &[2, 8]), &w, 1e-6, &mut f32t(vec![0.0; 16], &[16]))), "y shape differs");
    let (wu, _) = typed(&[0.0; 8], &[8], DType::U32);
    assert!(is_dtype_err(be.rms_norm(&f32t(vec![0.0; 16], &[2, 8]), &wu, 1e-6, &mut y)), "u32 weight");
    let (xb, _) = typed(&[0.0; 16], &[2, 8], DType::BF16);
    assert!(is_dtype_err(be.rms_norm(&xb, &w, 1e-6, &mut y)), "bf16 x");
    let (w0, _) = typed(&[], &[0], DType::F32);
    assert!(is_shape_err(be.rms_norm(&f32t(vec![], &[2, 0]), &w0, 1e-6, &mut f32t(vec![], &[2, 0]))), "empty weight");
}

#[test]
fn rope_rotates_pairs_of_both_styles() {
    let be = be();
    let mut rng = Rng::new(3);
    // (T, heads, head_dim, pairs): full rotary, partial rotary (rotary_dim < head_dim), none.
    for (t, nh, d, half) in [(3, 2, 8, 4), (4, 3, 10, 2), (2, 1, 6, 0), (70, 8, 64, 16)] {
        let inv_freq: Vec<f32> = (0..half).map(|i| 10000f32.powf(-2.0 * i as f32 / (2 * half) as f32)).collect();
        let positions: Vec<u32> = (0..t as u32).map(|i| i * 7 + 3).collect();
        for (style, factor) in [(RopeStyle::Neox, 1.0), (RopeStyle::Interleaved, 1.0), (RopeStyle::Neox, 1.3)] {
            let x = rng.f32s(t * nh * d);
            let mut xt = f32t(x.clone(), &[t, nh, d]);
            be.rope(&mut xt, &u32s(&positions), &table(inv_freq.clone(), style, factor)).expect("rope");
            for (row, &p) in positions.iter().enumerate() {
                for h in 0..nh {
                    let base = (row * nh + h) * d;
                    let mut want: Vec<f64> = x[base..base + d].iter().map(|&v| f64::from(v)).collect();
                    for (i, f) in inv_freq.iter().enumerate() {
                        // The contract's angle: `p * inv_freq` (rounded to f32, as HF does).
                        let (s, c) = f64::from(p as f32 * f).sin_cos();
                        let (s, c) = (s * f64::from(factor), c * f64::from(factor));
                        let (a, b) = match style {
                            RopeStyle::Neox => (i, i + half),
                            RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                        };
                        let (x0, x1) = (want[a], want[b]);
                        want[a] = x0 * c - x1 * s;
                        want[b] = x0 * s + x1 * c;
                    }
                    for (j, w) in want.iter().enumerate() {
                        let got = f64::from(data(&xt)[base + j]);
                        if j >= 2 * half {
                            assert_eq!(got, *w, "{style:?} dim {j} >= rotary_dim must be untouched");
                        }
                        assert!((got - w).abs() <= 1e-5 * f64::from(factor), "{style:?} x{factor} t{row} h{h} d{j}: {got} vs {w} (tol 1e-5 abs, |x| < 1.5)");
                    }
                }
            }
        }
    }
    let mut x = f32t(vec![0.0; 16], &[2, 1, 8]);
    let one = table(vec![1.0], RopeStyle::Neox, 1.0);
    assert!(is_shape_err(be.rope(&mut x, &u32s(&[0]), &one)), "1 position for 2 rows");
    assert!(is_shape_err(be.rope(&mut x, &u32s(&[0, 1]), &table(vec![1.0; 5], RopeStyle::Neox, 1.0))), "rotary_dim 10 > head_dim 8");
    assert!(is_dtype_err(be.rope(&mut x, &f32t(vec![0.0; 2], &[2]), &one)), "f32 positions");
    let mut x2 = f32t(vec![0.0; 16], &[2, 8]);
    assert!(is_shape_err(be.rope(&mut x2, &u32s(&[0, 1]), &one)), "2-D x");
    let (mut xb, _) = typed(&[0.0; 16], &[2, 1, 8], DType::BF16);
    assert!(is_dtype_err(be.rope(&mut xb, &u32s(&[0, 1]), &table(vec![1.0], RopeStyle::Interleaved, 1.0))), "bf16 x");
}

#[test]
fn silu_mul_and_add_assign_match_references() {
    let be = be();
    let mut rng = Rng::new(4);
    for (t, i) in [(3, 11), (1, 1), (0, 4), (130, 300)] {
        let gu: Vec<f32> = rng.f32s(t * 2 * i).iter().map(|v| v * 8.0).collect();
        let mut y = f32t(vec![f32::NAN; t * i], &[t, i]);
        be.silu_mul(&f32t(gu.clone(), &[t, 2 * i]), &mut y).expect("silu_mul");
        for r in 0..t {
            for c in 0..i {
                let (a, b) = (f64::from(gu[r * 2 * i + c]), f64::from(gu[r * 2 * i + i + c]));
                let want = a / (1.0 + (-a).exp()) * b;
                let got = f64::from(data(&y)[r * i + c]);
                assert!((got - want).abs() <= 1e-5 * want.abs() + 1e-6, "silu_mul [{r},{c}]: {got} vs {want} (tol 1e-5 rel + 1e-6)");
            }
        }
        let (a, b) = (rng.f32s(t * i), rng.f32s(t * i));
        let mut at = f32t(a.clone(), &[t, i]);
        be.add_assign(&mut at, &f32t(b.clone(), &[t, i])).expect("add_assign");
        let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        assert_eq!(data(&at), &want[..], "add_assign is one f32 add per element (exact)");
    }
    let mut y = f32t(vec![0.0; 6], &[2, 3]);
    assert!(is_shape_err(be.silu_mul(&f32t(vec![0.0; 10], &[2, 5]), &mut y)), "gate_up [2,5] for y [2,3]");
    assert!(is_shape_err(be.silu_mul(&f32t(vec![0.0; 6], &[6]), &mut f32t(vec![0.0; 3], &[3]))), "1-D y");
    let mut a = f32t(vec![0.0; 6], &[2, 3]);
    assert!(is_shape_err(be.add_assign(&mut a, &f32t(vec![0.0; 6], &[3, 2]))), "add_assign [2,3] += [3,2]");
    let (bb, _) = typed(&[0.0; 6], &[2, 3], DType::BF16);
    assert!(is_dtype_err(be.add_assign(&mut a, &bb)), "add_assign of bf16");
}

/// Runs `sample` on `logits [rows, v]` with one parameter row per row.
fn sample(be: &CpuBackend, logits: Vec<f32>, v: usize, params: &[SampleParams]) -> Result<Vec<u32>, BackendError> {
    let m = params.len();
    let mut ids = u32s(&vec![u32::MAX; m]);
    let p = SampleParams::tensor(params);
    let p = f32t(p.to_f32_vec().expect("f32"), &[m, 4]);
    be.sample(&f32t(logits, &[m, v]), &p, &mut ids)?;
    Ok(ids.buffer().as_u32("ids").expect("u32").to_vec())
}

#[test]
fn greedy_sampling_takes_the_first_maximum_and_skips_nan() {
    let be = be();
    let rows = vec![1.0, 3.0, 3.0, -1.0, f32::NAN, 5.0, 5.0, 0.0, f32::NAN, f32::NAN, f32::NAN, f32::NAN, -0.0, 0.0, -1.0, 0.0];
    assert_eq!(sample(&be, rows, 4, &[SampleParams::GREEDY; 4]).expect("sample"), vec![1, 1, 0, 0], "first index on ties, NaN never wins");
    let mut rng = Rng::new(5);
    let v = rng.f32s(3 * 1001);
    let got = sample(&be, v.clone(), 1001, &[SampleParams::GREEDY; 3]).expect("sample");
    for (r, g) in got.iter().enumerate() {
        let row = &v[r * 1001..(r + 1) * 1001];
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!(*g as usize, row.iter().position(|&x| x == max).expect("max"), "row {r}");
    }
    assert_eq!(sample(&be, vec![], 5, &[]).expect("no rows"), Vec::<u32>::new());
    assert!(is_shape_err(sample(&be, vec![], 0, &[SampleParams::GREEDY; 2])), "empty rows");
}

/// The contract's sampling rule, written out independently (f64 weights; sort; top-k; top-p
/// prefix; the first candidate whose running weight reaches `uniform` of the prefix's).
fn reference(logits: &[f32], p: SampleParams) -> u32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut c: Vec<(f64, u32)> = logits.iter().enumerate().map(|(i, &l)| (((f64::from(l) - f64::from(max)) / f64::from(p.temperature)).exp(), i as u32)).collect();
    c.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    if p.top_k > 0 {
        c.truncate(p.top_k as usize);
    }
    let total: f64 = c.iter().map(|x| x.0).sum();
    let mut n = 0;
    let mut acc = 0.0;
    while n < c.len() {
        acc += c[n].0;
        n += 1;
        if acc >= f64::from(p.top_p) * total {
            break;
        }
    }
    let mass: f64 = c[..n].iter().map(|x| x.0).sum();
    let goal = f64::from(p.uniform) * mass;
    let mut run = 0.0;
    for x in &c[..n] {
        run += x.0;
        if run >= goal {
            return x.1;
        }
    }
    c[n - 1].1
}

#[test]
fn random_sampling_follows_the_contracts_rule() {
    let be = be();
    let logits = vec![0.1, 3.0, 2.9, -1.0, 2.0, 0.5];
    let params = |temperature, top_p, top_k, uniform| SampleParams { temperature, top_p, top_k, uniform };
    // The support: top-p 0.5 keeps the two best of [3.0, 2.9, ...]; top-k 1 keeps one.
    for u in [0.0, 0.3, 0.49, 0.51, 0.99] {
        let got = sample(&be, logits.clone(), 6, &[params(1.0, 0.5, 0, u)]).expect("sample")[0];
        assert!(matches!(got, 1 | 2), "top-p 0.5 picks among ids 1 and 2, got {got} at u {u}");
        assert_eq!(sample(&be, logits.clone(), 6, &[params(1.0, 1.0, 1, u)]).expect("sample")[0], 1, "top-k 1 is greedy");
    }
    assert_eq!(sample(&be, logits.clone(), 6, &[params(1.0, 1.0, 0, 0.0)]).expect("sample")[0], 1, "u = 0 picks the best");
    let mut rng = Rng::new(6);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..200 {
        let v = rng.f32s(50).iter().map(|x| x * 3.0).collect::<Vec<_>>();
        let p = params(0.5 + rng.f32().abs(), 0.5 + 0.5 * rng.f32().abs(), (rng.next_u64() % 8) as u32, rng.f32().abs());
        let got = sample(&be, v.clone(), 50, &[p]).expect("sample")[0];
        assert_eq!(got, reference(&v, p), "{p:?}");
        seen.insert(got);
    }
    assert!(seen.len() > 10, "random rows pick many different tokens ({} seen)", seen.len());
    // +inf takes all the weight; NaN none; top-p past 1 is 1, and u = 1 still picks a real token.
    let edge = vec![f32::NAN, 1.0, f32::INFINITY, 3.0];
    for u in [0.0, 0.5, 0.99] {
        assert_eq!(sample(&be, edge.clone(), 4, &[params(1.0, 1.0, 0, u)]).expect("sample")[0], 2, "+inf at u {u}");
    }
    let nan_last = vec![2.0, f32::NAN, 1.0];
    assert_ne!(sample(&be, nan_last, 3, &[params(1.0, 7.0, 0, 1.0)]).expect("sample")[0], 1, "NaN never picked");
}

/// Routes one token of 4 experts in 2 groups with `rule` (2 experts per token, 1 group).
fn route(be: &CpuBackend, logits: [f32; 4], bias: Option<[f32; 4]>, scoring: MoeScoring, topk_method: TopkMethod, scale: f32, norm: bool) -> (Vec<u32>, Vec<f32>) {
    let rule = MoeRouting { scoring, topk_method, n_group: 2, topk_group: 1, top_k: 2, routed_scaling_factor: scale, norm_topk_prob: norm };
    let (mut ids, mut w) = (Tensor::from_parts(CpuStorage::U32(vec![0; 2]), vec![1, 2], DType::U32), f32t(vec![0.0; 2], &[1, 2]));
    let b = bias.map(|b| f32t(b.to_vec(), &[4]));
    be.moe_route(&f32t(logits.to_vec(), &[1, 4]), b.as_ref(), &rule, &mut ids, &mut w).expect("moe_route");
    (ids.buffer().as_u32("ids").expect("u32").to_vec(), data(&w).to_vec())
}

/// Hand-worked examples of each routing method (HF transformers' DeepSeek-V2/V3 rules), so the
/// routing kernel is checked against the rule, not against itself.
#[test]
fn moe_routing_follows_each_method_on_worked_examples() {
    let be = be();
    let sig = |x: f32| 1.0 / (1.0 + (-x).exp());
    let close = |got: &[f32], want: &[f32]| got.iter().zip(want).all(|(g, w)| (g - w).abs() <= 1e-6 * w.abs().max(1.0));
    // noaux_tc: sigmoid scores [.5, .881, .731, .269]; the bias -0.5 on expert 1 drops group 0's
    // top-2 sum (0.881 + 0.5 -> 0.381 + 0.5) below group 1's (1.0): group 1 wins, experts 2, 3,
    // weighted by their plain scores, normalised (they sum to 1), times 2.5.
    let (ids, w) = route(&be, [0.0, 2.0, 1.0, -1.0], Some([0.0, -0.5, 0.0, 0.0]), MoeScoring::Sigmoid, TopkMethod::NoauxTc, 2.5, true);
    assert_eq!(ids, [2, 3]);
    let (a, b) = (sig(1.0), sig(-1.0));
    assert!(close(&w, &[a / (a + b) * 2.5, b / (a + b) * 2.5]), "{w:?}");
    // Without the bias group 0 wins (1.381 > 1.0): experts 1, 0.
    let (ids, _) = route(&be, [0.0, 2.0, 1.0, -1.0], None, MoeScoring::Sigmoid, TopkMethod::NoauxTc, 2.5, true);
    assert_eq!(ids, [1, 0]);
    // group_limited_greedy: softmax scores of [1, 3, 2, 0]; group 0's best (0.644) beats group
    // 1's (0.237): experts 1, 0, plain scores times 1.5 (V2 does not normalise).
    let e: Vec<f32> = [1f32, 3.0, 2.0, 0.0].iter().map(|x| x.exp()).collect();
    let sum: f32 = e.iter().sum();
    let sm: Vec<f32> = e.iter().map(|x| x / sum).collect();
    let (ids, w) = route(&be, [1.0, 3.0, 2.0, 0.0], None, MoeScoring::Softmax, TopkMethod::GroupLimitedGreedy, 1.5, false);
    assert_eq!(ids, [1, 0]);
    assert!(close(&w, &[sm[1] * 1.5, sm[0] * 1.5]), "{w:?}");
    // greedy: the two best scores whatever their group: experts 1, 2.
    let (ids, w) = route(&be, [1.0, 3.0, 2.0, 0.0], None, MoeScoring::Softmax, TopkMethod::Greedy, 1.5, false);
    assert_eq!(ids, [1, 2]);
    assert!(close(&w, &[sm[1] * 1.5, sm[2] * 1.5]), "{w:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Arbitrary (often inconsistent) shapes: `linear` answers Ok exactly when they fit, and
    /// never panics.
    #[test]
    fn linear_shape_checks_never_panic(
        xs in prop::collection::vec(0usize..5, 1..4),
        ws in prop::collection::vec(0usize..5, 1..4),
        ys in prop::collection::vec(0usize..5, 1..4),
        bias in prop::option::of(0usize..6),
    ) {
        let be = be();
        let t = |s: &Vec<usize>| f32t(vec![0.5; s.iter().product()], s);
        let (x, w, mut y) = (t(&xs), t(&ws), t(&ys));
        let b = bias.map(|n| f32t(vec![1.0; n], &[n]));
        let fits = xs.len() == 2 && ws.len() == 2 && xs[1] == ws[1] && ys == vec![xs[0], ws[0]]
            && bias.is_none_or(|n| n == ws[0]);
        let r = be.linear(&x, &w, b.as_ref(), &mut y);
        prop_assert_eq!(r.is_ok(), fits, "x {:?} w {:?} y {:?} bias {:?}: {:?}", xs, ws, ys, bias, r);
    }
}
