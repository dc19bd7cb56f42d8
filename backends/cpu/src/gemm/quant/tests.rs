//! The block-format GEMM's paths against its scalar reference (bit for bit), the reference
//! against f32 arithmetic on the decoded weights, and the driver against per-element dots.

use finetp_core::backend::DType;
use finetp_core::backend::quant::decode;
use half::f16;

use super::acts::QActs;
use super::isa::Isa;
use super::scalar::{dot, dot_f32};
use super::{QWeights, TILE_ROWS, matmul_q};

const FORMATS: [DType; 3] = [DType::Q8_0, DType::Q4_0, DType::Q4_1];

/// A deterministic stream of pseudo-random 32-bit words.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as u32
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        self.next() as f32 / (1u64 << 30) as f32 - 1.0
    }
}

/// `n` rows of `k` elements of `dtype` with random quants, scales and minima (including the
/// extreme quants, -128 for Q8_0 among them).
fn weights(dtype: DType, n: usize, k: usize, rng: &mut Lcg) -> Vec<u8> {
    let blocks = n * k / 32;
    let mut out = Vec::with_capacity(blocks * dtype.block_bytes());
    for _ in 0..blocks {
        out.extend(f16::from_f32(rng.unit() * 0.1).to_le_bytes());
        if dtype == DType::Q4_1 {
            out.extend(f16::from_f32(rng.unit() * 0.5).to_le_bytes());
        }
        let body = if dtype == DType::Q8_0 { 32 } else { 16 };
        out.extend((0..body).map(|_| rng.next() as u8));
    }
    out
}

fn acts(m: usize, k: usize, rng: &mut Lcg) -> Vec<f32> {
    // Mixed scales, and one all-zero block (its scale is 0).
    let mut x: Vec<f32> = (0..m * k).map(|i| rng.unit() * if i % 97 < 7 { 30.0 } else { 1.0 }).collect();
    x[..32].fill(0.0);
    x
}

#[test]
fn every_path_equals_the_scalar_reference_bit_for_bit() {
    let mut rng = Lcg(7);
    let (n, k, m) = (11, 32 * 9, 6);
    let paths: Vec<Isa> = Isa::ALL.into_iter().filter(|i| i.available()).collect();
    eprintln!("paths on this CPU: {:?}", paths);
    for dtype in FORMATS {
        let rb = dtype.storage_bytes(k).unwrap();
        let w = weights(dtype, n, k, &mut rng);
        let x = acts(m, k, &mut rng);
        let a = QActs::new(&x, m, k, dtype);
        for &isa in &paths {
            for i in 0..m {
                for t0 in (0..n).step_by(TILE_ROWS) {
                    let rows = (n - t0).min(TILE_ROWS);
                    let mut out = [0f32; TILE_ROWS];
                    isa.dots(dtype, &w[t0 * rb..(t0 + rows) * rb], rb, rows, a.row(i), &mut out);
                    for r in 0..rows {
                        let want = dot(dtype, &w[(t0 + r) * rb..(t0 + r + 1) * rb], a.row(i));
                        assert_eq!(out[r].to_bits(), want.to_bits(), "{dtype} {isa:?} row {} act {i}: {} vs {want}", t0 + r, out[r]);
                    }
                }
            }
            // Whole tiles against several activation rows at once (the prefill kernel).
            for first in 0..=m - isa.act_rows() {
                for t0 in (0..n - TILE_ROWS + 1).step_by(TILE_ROWS) {
                    let mut out = [[0f32; TILE_ROWS]; super::MAX_ACT_ROWS];
                    isa.dots_rows(dtype, &w[t0 * rb..(t0 + TILE_ROWS) * rb], rb, &a, first, &mut out);
                    for (di, o) in out.iter().enumerate().take(isa.act_rows()) {
                        for (r, v) in o.iter().enumerate() {
                            let want = dot(dtype, &w[(t0 + r) * rb..(t0 + r + 1) * rb], a.row(first + di));
                            assert_eq!(v.to_bits(), want.to_bits(), "{dtype} {isa:?} rows at once: row {} act {}", t0 + r, first + di);
                        }
                    }
                }
            }
        }
    }
}

/// `n` random weight rows of `k` in `dtype` (bytes per row, the bytes, and decoded) and one
/// activation row.
fn one_row_case(dtype: DType, n: usize, k: usize, rng: &mut Lcg) -> (usize, Vec<u8>, Vec<f32>, Vec<f32>) {
    let w = weights(dtype, n, k, rng);
    let x = acts(1, k, rng);
    let mut deq = vec![0f32; n * k];
    decode(dtype, &w, &mut deq).unwrap();
    (dtype.storage_bytes(k).unwrap(), w, x, deq)
}

#[test]
fn f32_activations_match_dequantise_then_multiply() {
    let mut rng = Lcg(11);
    let (n, k) = (5, 32 * 6);
    for dtype in FORMATS {
        let (rb, w, x, deq) = one_row_case(dtype, n, k, &mut rng);
        for j in 0..n {
            let row = &deq[j * k..(j + 1) * k];
            // Dequantise-then-f32: the decoded f32 weights times x, summed exactly (f64).
            let want: f64 = row.iter().zip(&x).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum();
            let scale: f64 = row.iter().zip(&x).map(|(a, b)| (f64::from(*a) * f64::from(*b)).abs()).sum();
            let got = f64::from(dot_f32(dtype, &w[j * rb..(j + 1) * rb], &x));
            assert!((got - want).abs() <= 1e-6 * scale, "{dtype} row {j}: {got} vs {want} (scale {scale})");
        }
    }
}

#[test]
fn quantised_activations_err_by_at_most_half_a_step_per_element() {
    let mut rng = Lcg(13);
    let (n, k) = (6, 32 * 12);
    for dtype in FORMATS {
        let (rb, w, x, deq) = one_row_case(dtype, n, k, &mut rng);
        let a = QActs::new(&x, 1, k, dtype);
        for j in 0..n {
            let wr = &w[j * rb..(j + 1) * rb];
            // Each activation moves by at most d/2 (d = its block's max/127), times |w|.
            let bound: f64 = (0..k).map(|e| f64::from(deq[j * k + e].abs()) * f64::from(a.row(0).d[e / 32]) * 0.5).sum::<f64>() * 1.001 + 1e-6;
            let (q, f) = (dot(dtype, wr, a.row(0)), dot_f32(dtype, wr, &x));
            assert!(f64::from((q - f).abs()) <= bound, "{dtype} row {j}: {q} vs {f}, bound {bound}");
        }
    }
}

#[test]
fn the_threaded_driver_gives_each_output_its_reference_dot() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let mut rng = Lcg(17);
    // Enough work to split; n not a multiple of a tile or a task.
    let (n, k, m) = (203, 32 * 16, 70);
    for dtype in FORMATS {
        let rb = dtype.storage_bytes(k).unwrap();
        let w = weights(dtype, n, k, &mut rng);
        let x = acts(m, k, &mut rng);
        let mut y = vec![0f32; m * n];
        let isa = Isa::best();
        let a = QActs::new(&x, m, k, dtype);
        matmul_q(&pool, isa, &a, QWeights { dtype, bytes: &w, row_bytes: rb }, n, &mut y);
        for i in 0..m {
            for j in 0..n {
                let want = dot(dtype, &w[j * rb..(j + 1) * rb], a.row(i));
                assert_eq!(y[i * n + j].to_bits(), want.to_bits(), "{dtype} y[{i}, {j}]");
            }
        }
    }
}

#[test]
fn a_forced_path_is_checked_against_the_cpu() {
    assert!(Isa::forced("scalar").is_ok());
    assert!(Isa::forced("avx9").unwrap_err().contains("not a path"));
    for isa in Isa::ALL {
        assert_eq!(Isa::forced(isa.name()).is_ok(), isa.available());
    }
}
