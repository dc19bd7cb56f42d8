//! How close a backend must come to the CPU reference, stated once per op and activation dtype.
//!
//! Every float comparison is `|got − want| ≤ tol · scale` elementwise, where `scale` is
//! `max(1, |want|)` for element-wise ops (relative above 1, absolute below) and the stated
//! magnitude for reductions ([`Op::Linear`]: `Σₖ |xₖ·wₖ|` of that output). With f32 activations
//! the bounds are those the wgpu backend meets on Mesa's lavapipe, whose `sin`/`cos`/`exp`
//! differ from the C library's in the last bits and whose WGSL `fma` is split into a multiply
//! and an add; 16-bit activations round every stored value, so their bounds are that rounding
//! (2⁻⁸ for bf16, 2⁻¹¹ for f16) times a small factor for the reductions in between.

use finetp_core::backend::DType;

/// The ops whose tolerances differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Copies, gathers, adds, cache writes, collectives that only move data: bit for bit.
    Exact,
    /// `linear`, relative to `Σₖ |xₖ·wₖ|`.
    Linear,
    RmsNorm,
    Rope,
    SiluMul,
    Attention,
    /// Sums of collectives (all-reduce, reduce-scatter): another backend may add in another
    /// order.
    Sum,
    /// A sharded layer against the CPU's unsharded one (a few GEMMs, norms and collectives).
    Layer,
    /// A whole model's logits, relative to `max(1, |logit|)`; greedy tokens must agree
    /// wherever the reference's top-1/top-2 margin exceeds this.
    Logits,
}

impl Op {
    /// The tolerance of this op for activations of `act`.
    pub fn tol(self, act: DType) -> f32 {
        let f32_tol = match self {
            Op::Exact => 0.0,
            Op::Linear => 1e-5,
            Op::RmsNorm | Op::SiluMul => 1e-6,
            Op::Rope => 2e-6,
            Op::Attention => 1e-5,
            Op::Sum => 1e-6,
            Op::Layer => 1e-4,
            Op::Logits => 1e-3,
        };
        let rounding = match act {
            DType::BF16 => 1.0 / 256.0,
            DType::F16 => 1.0 / 2048.0,
            _ => return f32_tol,
        };
        let hops = match self {
            Op::Exact => 0.0,
            Op::RmsNorm | Op::SiluMul | Op::Rope | Op::Sum => 2.0,
            Op::Linear | Op::Attention => 4.0,
            Op::Layer => 8.0,
            Op::Logits => 32.0,
        };
        f32_tol.max(rounding * hops)
    }
}

/// `Ok` when every `|got − want| ≤ tol · scale(i)`; else the worst element, both values and
/// the bound, prefixed by `what`.
pub fn close_scaled(got: &[f32], want: &[f32], tol: f32, scale: impl Fn(usize) -> f32, what: &str) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{what}: {} values, expected {}", got.len(), want.len()));
    }
    let mut worst: Option<(usize, f32)> = None;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = if g.to_bits() == w.to_bits() { 0.0 } else { (g - w).abs() / scale(i) };
        // NaN against a number is the worst error.
        let err = if err.is_nan() { f32::INFINITY } else { err };
        if err > tol && worst.is_none_or(|(_, e)| err > e) {
            worst = Some((i, err));
        }
    }
    match worst {
        None => Ok(()),
        Some((i, e)) => Err(format!("{what}: element {i}: got {} want {} (error {e:e} > tolerance {tol:e})", got[i], want[i])),
    }
}

/// [`close_scaled`] with `scale = max(1, |want|)`; `tol = 0` demands the same bits.
pub fn close(got: &[f32], want: &[f32], tol: f32, what: &str) -> Result<(), String> {
    close_scaled(got, want, tol, |i| want[i].abs().max(1.0), what)
}

/// Positions where greedy decoding must agree: `true` at row `r` of `[rows, vocab]` logits when
/// the reference's top-1 beats its top-2 by more than `margin` (relative to `max(1, |top-1|)`).
pub fn decisive(logits: &[f32], vocab: usize, margin: f32) -> Vec<bool> {
    logits
        .chunks_exact(vocab.max(1))
        .map(|row| {
            let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
            for &x in row {
                if x > a {
                    (a, b) = (x, a);
                } else if x > b {
                    b = x;
                }
            }
            a - b > margin * a.abs().max(1.0)
        })
        .collect()
}

/// The index of the first largest value of each row.
pub fn argmax_rows(logits: &[f32], vocab: usize) -> Vec<usize> {
    logits
        .chunks_exact(vocab.max(1))
        .map(|row| row.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0)
        .collect()
}
