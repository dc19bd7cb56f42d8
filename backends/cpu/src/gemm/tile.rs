//! The register-tile microkernel: `R` weight rows against `C` activation rows, dot-product form.
//!
//! Both operands are k-contiguous (`x [m, k]`, `w [n, k]`), so the kernel keeps one 8-lane f32
//! accumulator per output `(c, r)` and walks `k` in steps of 8: every step loads `R` weight
//! vectors (widening 16-bit ones in registers) and `C` activation vectors and issues `R·C` FMAs.
//! No packing or transposing is needed. A 4×4 tile needs 16 accumulators + 5 operands, which
//! fits the 32 vector registers of AVX-512VL; with AVX2's 16 registers it runs as strips of 2
//! activation rows.
//!
//! Every output element is computed the same way whatever the tile shape, the ISA variant and
//! its position in the matrix: `k` is cut into blocks of [`K_BLOCK`]; in each block lane `l`
//! sums `k ≡ l (mod 8)` in order, the lanes are reduced in a fixed tree, the block's `% 8` tail
//! is added in order, and the block sums are added in order starting from 0. So `y[i, j]` does
//! not depend on `m`, `n`, the tiling or the split across threads — a column-sharded layer gives
//! bit-identical outputs to the unsharded one, and a token's logits do not change with the
//! batch it is in.

use super::weights::Elem;

/// Weight rows per tile.
pub(super) const R: usize = 4;
/// Activation rows per tile.
pub(super) const C: usize = 4;
/// Columns of `k` per reduction block (and per panel of the multi-pass driver): `R` f32 rows of
/// it (16 KiB) plus `C` activation rows (16 KiB) fit L1.
pub(super) const K_BLOCK: usize = 1024;

/// `out[c][r] = Σ_{i < len} x[c][i] · w[r][i]` for the first `rows` weight rows and `cols`
/// activation rows (`rows <= R`, `cols <= C`; other entries of `out` are left as they are).
///
/// Every used slice must hold at least `len` elements (checked). When `pf_ahead > 0` the tile
/// also prefetches (into L2) the weights `pf_ahead` elements after each of its weight rows, one
/// cache line at a time as it walks `k`, so that the next rows stream in from memory while
/// these are multiplied (prefetching never faults, so the addresses need not be valid).
pub(super) fn tile<T: Elem>(
    w: &[&[T]; R],
    rows: usize,
    x: &[&[f32]; C],
    cols: usize,
    len: usize,
    pf_ahead: usize,
    out: &mut [[f32; R]; C],
) {
    macro_rules! by_shape {
        ($f:ident, $($r:literal, $c:literal);*) => {
            match (rows, cols) {
                $(($r, $c) => $f::<T, $r, $c>(w, x, len, pf_ahead, out),)*
                _ => {} // an empty tile computes nothing
            }
        };
    }
    macro_rules! dispatch {
        ($f:ident) => {
            by_shape!($f, 4,4; 4,3; 4,2; 4,1; 3,4; 3,3; 3,2; 3,1; 2,4; 2,3; 2,2; 2,1; 1,4; 1,3; 1,2; 1,1)
        };
    }
    #[cfg(target_arch = "x86_64")]
    {
        use x86::{tile_avx2, tile_avx512};
        if avx512_available() {
            return dispatch!(tile_avx512);
        }
        if avx2_available() {
            return dispatch!(tile_avx2);
        }
    }
    dispatch!(tile_portable)
}

/// True when the CPU has AVX2, FMA and F16C (cached by std after the first call).
#[cfg(target_arch = "x86_64")]
#[inline]
pub(super) fn avx2_available() -> bool {
    use std::arch::is_x86_feature_detected as has;
    has!("avx2") && has!("fma") && has!("f16c")
}

/// True when AVX2 can also use the 32 registers of AVX-512VL.
#[cfg(target_arch = "x86_64")]
#[inline]
fn avx512_available() -> bool {
    use std::arch::is_x86_feature_detected as has;
    avx2_available() && has!("avx512f") && has!("avx512vl")
}

/// The `[start, end)` reduction blocks of `0..len`.
fn blocks(len: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..len).step_by(K_BLOCK).map(move |b| (b, (b + K_BLOCK).min(len)))
}

/// Plain-Rust fallback with the same lane structure (no FMA: without the hardware instruction
/// `mul_add` is a slow libm call).
fn tile_portable<T: Elem, const RR: usize, const CC: usize>(
    w: &[&[T]; R],
    x: &[&[f32]; C],
    len: usize,
    _pf_ahead: usize,
    out: &mut [[f32; R]; C],
) {
    let w: [&[T]; RR] = std::array::from_fn(|r| &w[r][..len]);
    let x: [&[f32]; CC] = std::array::from_fn(|c| &x[c][..len]);
    let mut total = [[0f32; RR]; CC];
    for (b0, b1) in blocks(len) {
        let mut acc = [[[0f32; 8]; RR]; CC];
        let end = b0 + (b1 - b0) / 8 * 8;
        for o in (b0..end).step_by(8) {
            for r in 0..RR {
                let wv: [f32; 8] = std::array::from_fn(|l| w[r][o + l].to_f32());
                for c in 0..CC {
                    for l in 0..8 {
                        acc[c][r][l] += x[c][o + l] * wv[l];
                    }
                }
            }
        }
        for c in 0..CC {
            for r in 0..RR {
                let a = &acc[c][r];
                // Same reduction tree as the x86 kernels: halves, then pairs, then the last two.
                let h: [f32; 4] = std::array::from_fn(|l| a[l] + a[l + 4]);
                let mut s = (h[0] + h[2]) + (h[1] + h[3]);
                for i in end..b1 {
                    s += x[c][i] * w[r][i].to_f32();
                }
                total[c][r] += s;
            }
        }
    }
    for c in 0..CC {
        out[c][..RR].copy_from_slice(&total[c]);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{C, Elem, R, blocks};

    /// AVX2 has 16 vector registers: wider tiles run as strips of 2 activation rows.
    #[inline(always)]
    pub(super) fn tile_avx2<T: Elem, const RR: usize, const CC: usize>(
        w: &[&[T]; R],
        x: &[&[f32]; C],
        len: usize,
        pf_ahead: usize,
        out: &mut [[f32; R]; C],
    ) {
        for c0 in (0..CC).step_by(2) {
            let xs: [&[f32]; C] = std::array::from_fn(|c| x.get(c0 + c).copied().unwrap_or(&[]));
            let mut o = [[0f32; R]; C];
            let pf = if c0 == 0 { pf_ahead } else { 0 };
            // SAFETY: `tile` only calls this after detecting AVX2, FMA and F16C at run time.
            unsafe {
                if CC - c0 >= 2 {
                    avx2::<T, RR, 2>(w, &xs, len, pf, &mut o);
                } else {
                    avx2::<T, RR, 1>(w, &xs, len, pf, &mut o);
                }
            }
            let n = (CC - c0).min(2);
            out[c0..c0 + n].copy_from_slice(&o[..n]);
        }
    }

    #[inline(always)]
    pub(super) fn tile_avx512<T: Elem, const RR: usize, const CC: usize>(
        w: &[&[T]; R],
        x: &[&[f32]; C],
        len: usize,
        pf_ahead: usize,
        out: &mut [[f32; R]; C],
    ) {
        // SAFETY: `tile` only calls this after detecting AVX2, FMA, F16C, AVX-512F/VL.
        unsafe { avx512::<T, RR, CC>(w, x, len, pf_ahead, out) }
    }

    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn avx2<T: Elem, const RR: usize, const CC: usize>(
        w: &[&[T]; R],
        x: &[&[f32]; C],
        len: usize,
        pf_ahead: usize,
        out: &mut [[f32; R]; C],
    ) {
        // SAFETY: the features `body` needs are enabled here.
        unsafe { body::<T, RR, CC>(w, x, len, pf_ahead, out) }
    }

    /// The same code with AVX-512VL enabled, so the compiler has 32 `ymm` registers.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA, F16C, AVX-512F and AVX-512VL.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl")]
    unsafe fn avx512<T: Elem, const RR: usize, const CC: usize>(
        w: &[&[T]; R],
        x: &[&[f32]; C],
        len: usize,
        pf_ahead: usize,
        out: &mut [[f32; R]; C],
    ) {
        // SAFETY: the features `body` needs are enabled here.
        unsafe { body::<T, RR, CC>(w, x, len, pf_ahead, out) }
    }

    /// # Safety
    /// Must be inlined into a function compiled with AVX2, FMA and F16C.
    #[inline(always)]
    unsafe fn body<T: Elem, const RR: usize, const CC: usize>(
        w: &[&[T]; R],
        x: &[&[f32]; C],
        len: usize,
        pf_ahead: usize,
        out: &mut [[f32; R]; C],
    ) {
        // Slicing checks every operand holds `len` elements; the loads below stay within.
        let wp: [*const T; RR] = std::array::from_fn(|r| w[r][..len].as_ptr());
        let xp: [*const f32; CC] = std::array::from_fn(|c| x[c][..len].as_ptr());
        // Prefetch once per 64-byte line of weights.
        let line = 64 / std::mem::size_of::<T>();
        // SAFETY: every load reads 8 elements at `o + 8 <= len`; prefetches never fault (and
        // `wrapping_add` never creates UB); the CPU features are the caller's (this is inlined
        // into a `target_feature` function).
        unsafe {
            let mut total = [[0f32; RR]; CC];
            for (b0, b1) in blocks(len) {
                let mut acc = [[_mm256_setzero_ps(); RR]; CC];
                let end = b0 + (b1 - b0) / 8 * 8;
                for o in (b0..end).step_by(8) {
                    if pf_ahead > 0 && o % line == 0 {
                        for p in &wp {
                            _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(o + pf_ahead).cast::<i8>());
                        }
                    }
                    let wv: [__m256; RR] = std::array::from_fn(|r| T::load8(wp[r].add(o)));
                    for c in 0..CC {
                        let xv = _mm256_loadu_ps(xp[c].add(o));
                        for r in 0..RR {
                            acc[c][r] = _mm256_fmadd_ps(xv, wv[r], acc[c][r]);
                        }
                    }
                }
                for c in 0..CC {
                    for r in 0..RR {
                        let mut s = hsum(acc[c][r]);
                        for i in end..b1 {
                            s = x[c][i].mul_add(w[r][i].to_f32(), s);
                        }
                        total[c][r] += s;
                    }
                }
            }
            for c in 0..CC {
                out[c][..RR].copy_from_slice(&total[c]);
            }
        }
    }

    /// `(a0+a4 + a2+a6) + (a1+a5 + a3+a7)`: the fixed order the portable kernel copies.
    ///
    /// # Safety
    /// Must be inlined into a function compiled with AVX.
    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        // SAFETY: the caller's features.
        unsafe {
            let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v)); // [h0 h1 h2 h3]
            let p = _mm_add_ps(h, _mm_movehl_ps(h, h)); // [h0+h2, h1+h3, ..]
            let s = _mm_add_ss(p, _mm_shuffle_ps::<0b01>(p, p)); // (h0+h2) + (h1+h3)
            _mm_cvtss_f32(s)
        }
    }
}

#[cfg(test)]
mod tests {
    //! The integration tests exercise whichever kernel this CPU dispatches to; these pin the
    //! other variants to it: the AVX2 strips must equal the AVX-512VL tile bit for bit (same
    //! lane order), the portable kernel must agree to rounding (it has no FMA).
    use half::bf16;

    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32 / (1 << 24) as f32 - 0.5).collect()
    }

    #[test]
    fn kernel_variants_agree() {
        let len = 8 * 150 + 5; // past one K_BLOCK, with a tail
        let wv = data(R * len, 1);
        let wb: Vec<bf16> = wv.iter().map(|&v| bf16::from_f32(v)).collect();
        let xv = data(C * len, 2);
        let w: [&[bf16]; R] = std::array::from_fn(|r| &wb[r * len..(r + 1) * len]);
        let x: [&[f32]; C] = std::array::from_fn(|c| &xv[c * len..(c + 1) * len]);
        let mut portable = [[0f32; R]; C];
        tile_portable::<bf16, R, C>(&w, &x, len, 0, &mut portable);
        for c in 0..C {
            for r in 0..R {
                let want: f64 = (0..len).map(|i| f64::from(x[c][i]) * f64::from(w[r][i].to_f32())).sum();
                let mag: f64 = (0..len).map(|i| (f64::from(x[c][i]) * f64::from(w[r][i].to_f32())).abs()).sum();
                assert!((f64::from(portable[c][r]) - want).abs() <= 1e-5 * mag, "portable ({c},{r}): tol 1e-5 · Σ|x·w|");
            }
        }
        #[cfg(target_arch = "x86_64")]
        {
            if !avx2_available() {
                return;
            }
            let mut a2 = [[0f32; R]; C];
            x86::tile_avx2::<bf16, R, C>(&w, &x, len, 0, &mut a2);
            for c in 0..C {
                for r in 0..R {
                    assert!((a2[c][r] - portable[c][r]).abs() <= 1e-5, "avx2 vs portable ({c},{r}): tol 1e-5 abs");
                }
            }
            if avx512_available() {
                let mut a5 = [[0f32; R]; C];
                x86::tile_avx512::<bf16, R, C>(&w, &x, len, 0, &mut a5);
                assert_eq!(a2, a5, "AVX2 strips and the AVX-512VL tile must agree bit for bit");
            }
        }
    }
}
