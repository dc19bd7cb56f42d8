//! The x86-64 block-format dot products: AVX2 (`maddubs` + `madd`), AVX-VNNI and AVX-512 VNNI
//! (`vpdpbusd`), each in the fixed order of [`super`] (the lane sums are exact integers, so
//! every path gives the scalar path's bits).
//!
//! A block's products are formed as unsigned × signed bytes: `Q4_1`'s nibbles are unsigned
//! already; `Q8_0` and `Q4_0` (nibble − 8) weights are split into `|w|` and the activations
//! given `w`'s sign (`sign_epi8`), as llama.cpp does. The pair sums of `maddubs` cannot
//! saturate: `|w| <= 128` and `|a| <= 127` give at most 32,512.

use std::arch::x86_64::*;

use finetp_core::backend::DType;

use super::TILE_ROWS;
use super::acts::ActRow;

/// How many tiles ahead the 512-bit kernel prefetches the weight rows.
const PF_TILES: usize = 2;

const Q8_0: u8 = 0;
const Q4_0: u8 = 1;
const Q4_1: u8 = 2;

/// The x86 kernels, by the instructions they need.
#[derive(Clone, Copy)]
pub(super) enum Path {
    Avx2,
    AvxVnni,
    Avx512Vnni,
}

/// `out[r] = w_r · a` for `rows` weight rows on `path`.
///
/// # Safety
/// `path`'s instructions must be available on this CPU; `tile` must hold `rows` rows of `row_bytes`, each
/// `a.blocks()` blocks of `dtype`.
pub(super) unsafe fn dots(path: Path, dtype: DType, tile: &[u8], row_bytes: usize, rows: usize, a: ActRow<'_>, out: &mut [f32; TILE_ROWS]) {
    macro_rules! go {
        ($f:ident) => {
            // SAFETY: as this function's contract.
            unsafe {
                match dtype {
                    DType::Q8_0 => $f::<Q8_0>(tile, row_bytes, rows, a, out),
                    DType::Q4_0 => $f::<Q4_0>(tile, row_bytes, rows, a, out),
                    DType::Q4_1 => $f::<Q4_1>(tile, row_bytes, rows, a, out),
                    other => unreachable!("{other} is not a block format of this GEMM"),
                }
            }
        };
    }
    match path {
        Path::Avx2 => go!(tile_avx2),
        Path::AvxVnni => go!(tile_avxvnni),
        // Whole tiles two rows per 512-bit register; a range's last rows 256 bits at a time.
        Path::Avx512Vnni if rows == TILE_ROWS => {
            // SAFETY: as this function's contract, with a whole tile.
            unsafe {
                match dtype {
                    DType::Q8_0 => tile4_avx512vnni::<Q8_0>(tile, row_bytes, a, out),
                    DType::Q4_0 => tile4_avx512vnni::<Q4_0>(tile, row_bytes, a, out),
                    DType::Q4_1 => tile4_avx512vnni::<Q4_1>(tile, row_bytes, a, out),
                    other => unreachable!("{other} is not a block format of this GEMM"),
                }
            }
        }
        Path::Avx512Vnni => go!(tile_avx512vnni),
    }
}

/// The f16 at `p` (exact, by F16C).
#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    // SAFETY: the caller guarantees 2 readable bytes and F16C.
    unsafe {
        let bits = i32::from(p.cast::<u16>().read_unaligned());
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits)))
    }
}

/// The 32 nibbles of the 16 bytes at `p` in element order (low nibbles, then high).
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 16 readable bytes and AVX2.
    unsafe {
        let raw = _mm_loadu_si128(p.cast());
        _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16::<4>(raw), raw), _mm256_set1_epi8(0x0f))
    }
}

/// A block's weights as unsigned bytes and `aq` signed to match (their products are `w · a`).
#[inline(always)]
unsafe fn operands<const F: u8>(blk: *const u8, aq: __m256i) -> (__m256i, __m256i) {
    // SAFETY: the caller guarantees a whole block at `blk` and AVX2.
    unsafe {
        match F {
            Q4_1 => (nibbles(blk.add(4)), aq),
            _ => {
                let w = if F == Q8_0 { _mm256_loadu_si256(blk.add(2).cast()) } else { _mm256_sub_epi8(nibbles(blk.add(2)), _mm256_set1_epi8(8)) };
                (_mm256_sign_epi8(w, w), _mm256_sign_epi8(aq, w))
            }
        }
    }
}

/// The 8 lanes reduced in the fixed order: `(lo + hi)`, then its halves, then its pair.
#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    // SAFETY: AVX is enabled by the caller.
    unsafe {
        let t4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let t2 = _mm_add_ps(t4, _mm_movehl_ps(t4, t4));
        _mm_cvtss_f32(_mm_add_ss(t2, _mm_shuffle_ps::<0b01>(t2, t2)))
    }
}

/// One tile kernel per path: they differ only in how the 8 lanes' integer sums are formed.
macro_rules! tile_kernel {
    ($name:ident, $feat:literal, |$u:ident, $s:ident| $lanes:expr) => {
        /// # Safety
        /// As [`dots`].
        #[target_feature(enable = $feat)]
        unsafe fn $name<const F: u8>(tile: &[u8], row_bytes: usize, rows: usize, a: ActRow<'_>, out: &mut [f32; TILE_ROWS]) {
            let nb = a.blocks();
            let bb = row_bytes / nb.max(1);
            let base = tile.as_ptr();
            let mut acc = [_mm256_setzero_ps(); TILE_ROWS];
            let mut accm = [0f32; TILE_ROWS];
            // SAFETY: every pointer below lies in `tile` (`rows` rows of `nb` blocks) or in
            // `a` (`nb` blocks of 32), as the caller guarantees.
            unsafe {
                if rows == TILE_ROWS {
                    for b in 0..nb {
                        let aq = _mm256_loadu_si256(a.q.as_ptr().add(b * 32).cast());
                        let da = *a.d.get_unchecked(b);
                        for r in 0..TILE_ROWS {
                            let blk = base.add(r * row_bytes + b * bb);
                            let ($u, $s) = operands::<F>(blk, aq);
                            let dd = f16_at(blk) * da;
                            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(dd), _mm256_cvtepi32_ps($lanes), acc[r]);
                            if F == Q4_1 {
                                accm[r] = f16_at(blk.add(2)).mul_add(*a.s.get_unchecked(b), accm[r]);
                            }
                        }
                    }
                } else {
                    for r in 0..rows {
                        for b in 0..nb {
                            let aq = _mm256_loadu_si256(a.q.as_ptr().add(b * 32).cast());
                            let blk = base.add(r * row_bytes + b * bb);
                            let ($u, $s) = operands::<F>(blk, aq);
                            let dd = f16_at(blk) * *a.d.get_unchecked(b);
                            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(dd), _mm256_cvtepi32_ps($lanes), acc[r]);
                            if F == Q4_1 {
                                accm[r] = f16_at(blk.add(2)).mul_add(*a.s.get_unchecked(b), accm[r]);
                            }
                        }
                    }
                }
                for r in 0..rows {
                    out[r] = hsum(acc[r]) + accm[r];
                }
            }
        }
    };
}

tile_kernel!(tile_avx2, "avx2,fma,f16c", |u, s| _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
tile_kernel!(tile_avxvnni, "avx2,fma,f16c,avxvnni", |u, s| _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, s));
tile_kernel!(tile_avx512vnni, "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni", |u, s| _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s));

/// Two weight rows' block as one 512-bit operand pair: row `p`'s 32 bytes in the low half, row
/// `p + 1`'s in the high half, unsigned, and the activations (both halves) signed to match.
#[inline(always)]
unsafe fn operands_pair<const F: u8>(b0: *const u8, b1: *const u8, aq: __m512i) -> (__m512i, __m512i) {
    // SAFETY: the caller guarantees a whole block at `b0` and at `b1`, and AVX-512F/BW.
    unsafe {
        match F {
            Q4_1 | Q4_0 => {
                let nib = nibble_pair::<F>(b0, b1);
                if F == Q4_1 {
                    (nib, aq)
                } else {
                    signed_pair(_mm512_sub_epi8(nib, _mm512_set1_epi8(8)), aq)
                }
            }
            _ => {
                let w = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(_mm256_loadu_si256(b0.add(2).cast())), _mm256_loadu_si256(b1.add(2).cast()));
                signed_pair(w, aq)
            }
        }
    }
}

/// Two 4-bit blocks' nibbles as one 512-bit operand: row `p`'s 32 in element order in the low
/// half, row `p + 1`'s in the high half.
#[inline(always)]
unsafe fn nibble_pair<const F: u8>(b0: *const u8, b1: *const u8) -> __m512i {
    // SAFETY: the caller guarantees a whole 4-bit block at `b0` and at `b1`, and AVX-512F/BW.
    unsafe {
        let off = if F == Q4_1 { 4 } else { 2 };
        let x = _mm256_set_m128i(_mm_loadu_si128(b1.add(off).cast()), _mm_loadu_si128(b0.add(off).cast()));
        // 128-bit lanes: [row p low nibbles, row p+1 low, row p high, row p+1 high] …
        let z = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(x), _mm256_srli_epi16::<4>(x));
        // … reordered to [p low, p high, p+1 low, p+1 high]: each row in element order.
        _mm512_and_si512(_mm512_shuffle_i64x2::<0b11_01_10_00>(z, z), _mm512_set1_epi8(0x0f))
    }
}

/// `(|w|, a · sign(w))`: the same products as `w · a` (where `w = 0`, `|w| = 0`).
#[inline(always)]
unsafe fn signed_pair(w: __m512i, aq: __m512i) -> (__m512i, __m512i) {
    // SAFETY: AVX-512BW is enabled by the caller.
    unsafe {
        let neg = _mm512_movepi8_mask(w);
        (_mm512_abs_epi8(w), _mm512_mask_sub_epi8(aq, neg, _mm512_setzero_si512(), aq))
    }
}

/// `[a; 8]` in the low half and `[b; 8]` in the high half.
#[inline(always)]
unsafe fn halves(a: f32, b: f32) -> __m512 {
    // SAFETY: AVX-512F is enabled by the caller.
    unsafe { _mm512_castpd_ps(_mm512_insertf64x4::<1>(_mm512_castpd256_pd512(_mm256_castps_pd(_mm256_set1_ps(a))), _mm256_castps_pd(_mm256_set1_ps(b)))) }
}

/// A whole tile of [`TILE_ROWS`] rows with AVX-512 VNNI: rows in pairs, one per 256-bit half
/// of a 512-bit accumulator, so each half takes exactly the fixed order's lane FMAs.
///
/// # Safety
/// As [`dots`], with `rows == TILE_ROWS`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile4_avx512vnni<const F: u8>(tile: &[u8], row_bytes: usize, a: ActRow<'_>, out: &mut [f32; TILE_ROWS]) {
    let nb = a.blocks();
    let bb = row_bytes / nb.max(1);
    let base = tile.as_ptr();
    let mut acc = [_mm512_setzero_ps(); TILE_ROWS / 2];
    let mut accm = [0f32; TILE_ROWS];
    // SAFETY: every pointer lies in `tile` (TILE_ROWS rows of `nb` blocks) or in `a`.
    unsafe {
        for b in 0..nb {
            // The tile PF_TILES ahead, 4 blocks' bytes per block (hints never fault).
            let pf = base.wrapping_add(PF_TILES * TILE_ROWS * row_bytes + b * TILE_ROWS * bb);
            _mm_prefetch::<_MM_HINT_T0>(pf.cast());
            _mm_prefetch::<_MM_HINT_T0>(pf.wrapping_add(64).cast());
            let aq = _mm512_broadcast_i64x4(_mm256_loadu_si256(a.q.as_ptr().add(b * 32).cast()));
            let da = *a.d.get_unchecked(b);
            for p in 0..TILE_ROWS / 2 {
                let (b0, b1) = (base.add(2 * p * row_bytes + b * bb), base.add((2 * p + 1) * row_bytes + b * bb));
                let (u, s) = operands_pair::<F>(b0, b1, aq);
                let lanes = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, s);
                let dd = halves(f16_at(b0) * da, f16_at(b1) * da);
                acc[p] = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(lanes), acc[p]);
                if F == Q4_1 {
                    let sa = *a.s.get_unchecked(b);
                    accm[2 * p] = f16_at(b0.add(2)).mul_add(sa, accm[2 * p]);
                    accm[2 * p + 1] = f16_at(b1.add(2)).mul_add(sa, accm[2 * p + 1]);
                }
            }
        }
        for p in 0..TILE_ROWS / 2 {
            out[2 * p] = hsum(_mm512_castps512_ps256(acc[p])) + accm[2 * p];
            out[2 * p + 1] = hsum(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(acc[p])))) + accm[2 * p + 1];
        }
    }
}

// The kernels below pair rows and build the Q4_1 minimums of exactly four rows.
const _: () = assert!(TILE_ROWS == 4);

/// Activation rows the prefill kernel takes at once with each whole tile.
pub(super) const ACT_ROWS: usize = 4;

/// A whole tile of [`TILE_ROWS`] weight rows against [`ACT_ROWS`] activation rows with AVX-512
/// VNNI (prefill and batched decode): each block's weights are unpacked and their scales
/// converted once for the four activation rows, and each output takes exactly the lane FMAs
/// of [`tile4_avx512vnni`] in the same order, so the bits are those of the one-row kernel.
///
/// # Safety
/// AVX-512 VNNI (with F, BW, VL), AVX2, FMA and F16C must be available; `tile` must hold
/// `TILE_ROWS` rows of `row_bytes`, each `a[i].blocks()` blocks of `F`'s format, for every row.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn tile4x4_avx512vnni<const F: u8>(tile: &[u8], row_bytes: usize, a: [ActRow<'_>; ACT_ROWS], out: &mut [[f32; TILE_ROWS]; ACT_ROWS]) {
    let nb = a[0].blocks();
    let bb = row_bytes / nb.max(1);
    let base = tile.as_ptr();
    let mut acc = [[_mm512_setzero_ps(); TILE_ROWS / 2]; ACT_ROWS];
    // The Q4_1 minimum terms, lane r of row i's vector for weight row r.
    let mut accm = [_mm_setzero_ps(); ACT_ROWS];
    // SAFETY: every pointer lies in `tile` (TILE_ROWS rows of `nb` blocks) or in one of `a`.
    unsafe {
        for b in 0..nb {
            let pf = base.wrapping_add(PF_TILES * TILE_ROWS * row_bytes + b * TILE_ROWS * bb);
            _mm_prefetch::<_MM_HINT_T0>(pf.cast());
            _mm_prefetch::<_MM_HINT_T0>(pf.wrapping_add(64).cast());
            let blk = |r: usize| base.add(r * row_bytes + b * bb);
            // Per pair: the weights as unsigned bytes, the sign mask (Q8_0, Q4_0), the scales.
            let mut u = [_mm512_setzero_si512(); TILE_ROWS / 2];
            let mut neg = [0u64; TILE_ROWS / 2];
            let mut dw = [_mm512_setzero_ps(); TILE_ROWS / 2];
            for p in 0..TILE_ROWS / 2 {
                let (b0, b1) = (blk(2 * p), blk(2 * p + 1));
                u[p] = match F {
                    Q4_1 => nibble_pair::<Q4_1>(b0, b1),
                    Q4_0 => _mm512_sub_epi8(nibble_pair::<Q4_0>(b0, b1), _mm512_set1_epi8(8)),
                    _ => _mm512_inserti64x4::<1>(_mm512_castsi256_si512(_mm256_loadu_si256(b0.add(2).cast())), _mm256_loadu_si256(b1.add(2).cast())),
                };
                if F != Q4_1 {
                    neg[p] = _mm512_movepi8_mask(u[p]);
                    u[p] = _mm512_abs_epi8(u[p]);
                }
                dw[p] = halves(f16_at(b0), f16_at(b1));
            }
            let mw = if F == Q4_1 { _mm_set_ps(f16_at(blk(3).add(2)), f16_at(blk(2).add(2)), f16_at(blk(1).add(2)), f16_at(blk(0).add(2))) } else { _mm_setzero_ps() };
            for (i, ai) in a.iter().enumerate() {
                let aq = _mm512_broadcast_i64x4(_mm256_loadu_si256(ai.q.as_ptr().add(b * 32).cast()));
                let da = _mm512_set1_ps(*ai.d.get_unchecked(b));
                for p in 0..TILE_ROWS / 2 {
                    let s = if F == Q4_1 { aq } else { _mm512_mask_sub_epi8(aq, neg[p], _mm512_setzero_si512(), aq) };
                    let lanes = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u[p], s);
                    acc[i][p] = _mm512_fmadd_ps(_mm512_mul_ps(dw[p], da), _mm512_cvtepi32_ps(lanes), acc[i][p]);
                }
                if F == Q4_1 {
                    accm[i] = _mm_fmadd_ps(mw, _mm_set1_ps(*ai.s.get_unchecked(b)), accm[i]);
                }
            }
        }
        for i in 0..ACT_ROWS {
            let mut m = [0f32; 4];
            _mm_storeu_ps(m.as_mut_ptr(), accm[i]);
            for p in 0..TILE_ROWS / 2 {
                out[i][2 * p] = hsum(_mm512_castps512_ps256(acc[i][p])) + m[2 * p];
                out[i][2 * p + 1] = hsum(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(acc[i][p])))) + m[2 * p + 1];
            }
        }
    }
}

/// [`tile4x4_avx512vnni`] for `dtype`.
///
/// # Safety
/// As [`tile4x4_avx512vnni`].
pub(super) unsafe fn tile4x4(dtype: DType, tile: &[u8], row_bytes: usize, a: [ActRow<'_>; ACT_ROWS], out: &mut [[f32; TILE_ROWS]; ACT_ROWS]) {
    // SAFETY: as this function's contract.
    unsafe {
        match dtype {
            DType::Q8_0 => tile4x4_avx512vnni::<Q8_0>(tile, row_bytes, a, out),
            DType::Q4_0 => tile4x4_avx512vnni::<Q4_0>(tile, row_bytes, a, out),
            DType::Q4_1 => tile4x4_avx512vnni::<Q4_1>(tile, row_bytes, a, out),
            other => unreachable!("{other} is not a block format of this GEMM"),
        }
    }
}
