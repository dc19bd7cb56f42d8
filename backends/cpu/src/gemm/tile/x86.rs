//! The x86-64 kernels: AVX2 + FMA + F16C strips, and AVX-512VL tiles (32 registers) where the CPU has
//! it, in the fixed reduction order of [`super`], and the AVX2 weight-panel packer.

use std::arch::x86_64::*;

use super::super::weights::Elem;
use super::types::{K_BLOCK, MAX_SUMS, Out, Run, STEP, Src, add_sums};

/// True when the CPU has AVX2, FMA and F16C (cached by std after the first call).
#[inline]
pub(in super::super) fn avx2_available() -> bool {
    use std::arch::is_x86_feature_detected as has;
    has!("avx2") && has!("fma") && has!("f16c")
}

/// True when AVX2 can also use the 32 registers of AVX-512VL.
#[inline]
pub(in super::super) fn avx512_available() -> bool {
    use std::arch::is_x86_feature_detected as has;
    avx2_available() && has!("avx512f") && has!("avx512vl")
}

/// A tile's weight rows as raw pointers: `load(r, s)` gives step `s` of row `r` as its two
/// 8-lane halves.
trait Load: Copy {
    /// # Safety
    /// Step `s` of row `r` must be readable; AVX2, FMA and F16C must be enabled.
    unsafe fn load(self, r: usize, s: usize) -> [__m256; 2];
    /// Prefetch (never faults) the weights `ahead` elements after step `s` of row `r`.
    ///
    /// # Safety
    /// The CPU features as for `load`.
    unsafe fn prefetch(self, r: usize, s: usize, ahead: usize);
    /// The same source without its first `r0` rows.
    fn skip_rows(self, r0: usize) -> Self;
    /// The same rows from element `k0` on (`Direct` only; a packed panel is one block).
    fn at(self, k0: usize) -> Self;
}

#[derive(Clone, Copy)]
struct Direct<T> {
    p: *const T,
    stride: usize,
}

impl<T: Elem> Load for Direct<T> {
    #[inline(always)]
    unsafe fn load(self, r: usize, s: usize) -> [__m256; 2] {
        // SAFETY: the caller's guarantees.
        unsafe { T::load_step(self.p.add(r * self.stride + s * STEP)) }
    }

    #[inline(always)]
    unsafe fn prefetch(self, r: usize, s: usize, ahead: usize) {
        // Once per 64-byte line: every step for f32, every other step for 16-bit weights.
        if (s * STEP * size_of::<T>()).is_multiple_of(64) {
            let p = self.p.wrapping_add(r * self.stride + s * STEP + ahead);
            // SAFETY: prefetching never faults; `wrapping_add` creates no UB.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(p.cast::<i8>()) };
        }
    }

    fn skip_rows(self, r0: usize) -> Self {
        Direct { p: self.p.wrapping_add(r0 * self.stride), stride: self.stride }
    }

    fn at(self, k0: usize) -> Self {
        Direct { p: self.p.wrapping_add(k0), stride: self.stride }
    }
}

/// `[step][panel_rows][STEP]` f32, already in lane order; `ss` = `panel_rows · STEP`.
#[derive(Clone, Copy)]
struct Packed {
    p: *const f32,
    ss: usize,
}

impl Load for Packed {
    #[inline(always)]
    unsafe fn load(self, r: usize, s: usize) -> [__m256; 2] {
        // SAFETY: the caller's guarantees.
        unsafe {
            let p = self.p.add(s * self.ss + r * STEP);
            [_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))]
        }
    }

    #[inline(always)]
    unsafe fn prefetch(self, _r: usize, _s: usize, _ahead: usize) {}

    fn skip_rows(self, r0: usize) -> Self {
        Packed { p: self.p.wrapping_add(r0 * STEP), ss: self.ss }
    }

    fn at(self, k0: usize) -> Self {
        debug_assert_eq!(k0, 0, "a packed panel is one block");
        self
    }
}

/// What one kernel call reads: the weights, the activations of the tile's first column
/// (`x`, step stride `xs`), whole steps, the tail panel (row stride `STEP`), prefetch distance.
#[derive(Clone, Copy)]
struct Args<L> {
    w: L,
    x: *const f32,
    xs: usize,
    steps: usize,
    tail: Option<Packed>,
    ahead: usize,
}

impl<L: Load> Args<L> {
    fn skip(self, r0: usize, c0: usize) -> Self {
        Args { w: self.w.skip_rows(r0), x: self.x.wrapping_add(c0 * STEP), tail: self.tail.map(|t| t.skip_rows(r0)), ..self }
    }
}

/// Accumulates one step into `acc`; each accumulator gets half 0, then half 1. Holds the
/// smaller operand in registers: `2·rows` weight or `2·cols` activation vectors.
///
/// # Safety
/// Step `s` of rows `0..RR` of `w` and `CC` activation rows at `x` must be readable; must be
/// inlined into a function compiled with AVX2, FMA and F16C.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // indices into fixed-size register arrays read clearer
unsafe fn step<L: Load, const RR: usize, const CC: usize>(w: L, s: usize, x: *const f32, acc: &mut [[__m256; RR]; CC]) {
    // SAFETY: the caller's guarantees.
    unsafe {
        if RR <= CC {
            let wv: [[__m256; 2]; RR] = std::array::from_fn(|r| w.load(r, s));
            for h in 0..2 {
                for (c, acc) in acc.iter_mut().enumerate() {
                    let xv = _mm256_loadu_ps(x.add(c * STEP + h * 8));
                    for r in 0..RR {
                        acc[r] = _mm256_fmadd_ps(xv, wv[r][h], acc[r]);
                    }
                }
            }
        } else {
            let xv: [[__m256; 2]; CC] = std::array::from_fn(|c| [_mm256_loadu_ps(x.add(c * STEP)), _mm256_loadu_ps(x.add(c * STEP + 8))]);
            for r in 0..RR {
                let wv = w.load(r, s);
                for h in 0..2 {
                    for c in 0..CC {
                        acc[c][r] = _mm256_fmadd_ps(xv[c][h], wv[h], acc[c][r]);
                    }
                }
            }
        }
    }
}

/// The lane sums of 8 accumulators at once, each `(h0 + h1) + (h2 + h3)` with
/// `h_l = a_l + a_{l+4}` (IEEE addition commutes, so this equals `reduce_lanes` bit for bit).
///
/// # Safety
/// Must be inlined into a function compiled with AVX.
#[inline(always)]
unsafe fn reduce8(v: [__m256; 8]) -> __m256 {
    // SAFETY: the caller's features.
    unsafe {
        // [h(a) | h(b)]: the low 128-bit lane holds a's four h_l, the high one b's.
        let halves = |a, b| _mm256_add_ps(_mm256_permute2f128_ps::<0x20>(a, b), _mm256_permute2f128_ps::<0x31>(a, b));
        let c = _mm256_hadd_ps(halves(v[0], v[4]), halves(v[1], v[5])); // [h0 pairs, h1 pairs | h4, h5]
        let d = _mm256_hadd_ps(halves(v[2], v[6]), halves(v[3], v[7])); // [h2, h3 | h6, h7]
        _mm256_hadd_ps(c, d) // [s0 s1 s2 s3 | s4 s5 s6 s7]
    }
}

/// One tile: all steps, the tail, then the lane sums into `sums[c·RR + r]`.
///
/// # Safety
/// Everything `a` points to must be readable as described by [`Args`]; must be inlined into
/// a function compiled with AVX2, FMA and F16C.
#[inline(always)]
unsafe fn kernel<L: Load, const RR: usize, const CC: usize>(a: Args<L>, sums: &mut [f32; MAX_SUMS]) {
    // SAFETY: the caller's guarantees; prefetches never fault.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); RR]; CC];
        for s in 0..a.steps {
            if a.ahead > 0 {
                for r in 0..RR {
                    a.w.prefetch(r, s, a.ahead);
                }
            }
            step::<L, RR, CC>(a.w, s, a.x.add(s * a.xs), &mut acc);
        }
        if let Some(t) = a.tail {
            step::<Packed, RR, CC>(t, 0, a.x.add(a.steps * a.xs), &mut acc);
        }
        let n = RR * CC;
        for g in 0..n.div_ceil(8) {
            let v: [__m256; 8] = std::array::from_fn(|i| {
                let idx = g * 8 + i;
                if idx < n { acc[idx / RR][idx % RR] } else { _mm256_setzero_ps() }
            });
            let s = reduce8(v);
            if g * 8 + 8 <= MAX_SUMS {
                _mm256_storeu_ps(sums.as_mut_ptr().add(g * 8), s);
            }
        }
    }
}

/// [`kernel`] compiled on its own (so that each shape's loop gets the whole register file)
/// for AVX-512VL's 32 registers.
///
/// # Safety
/// As for [`kernel`]; the CPU must have AVX2, FMA, F16C, AVX-512F and AVX-512VL.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl")]
#[inline(never)]
unsafe fn kernel_wide<L: Load, const RR: usize, const CC: usize>(a: Args<L>, sums: &mut [f32; MAX_SUMS]) {
    // SAFETY: the caller's guarantees.
    unsafe { kernel::<L, RR, CC>(a, sums) }
}

/// [`kernel`] compiled on its own for AVX2.
///
/// # Safety
/// As for [`kernel`]; the CPU must have AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline(never)]
unsafe fn kernel_narrow<L: Load, const RR: usize, const CC: usize>(a: Args<L>, sums: &mut [f32; MAX_SUMS]) {
    // SAFETY: the caller's guarantees.
    unsafe { kernel::<L, RR, CC>(a, sums) }
}

/// The tile as strips of at most 2 weight rows × 4 activation rows (≤ 8 accumulators, for
/// AVX2's 16 registers). Each output sees the same operations as in one big tile.
///
/// # Safety
/// As for [`any_tile`].
unsafe fn strips<L: Load>(a: Args<L>, rows: usize, cols: usize, wide: bool, sums: &mut [f32; MAX_SUMS]) {
    for r0 in (0..rows).step_by(2) {
        for c0 in (0..cols).step_by(4) {
            let (rr, cc) = ((rows - r0).min(2), (cols - c0).min(4));
            let sub = a.skip(r0, c0);
            let mut part = [0f32; MAX_SUMS];
            macro_rules! go {
                ($($r:literal, $c:literal);*) => {
                    match (rr, cc) {
                        // SAFETY: the sub-tile reads a subset of what the caller vouched
                        // for, with the features it vouched for.
                        $(($r, $c) => unsafe {
                            if wide { kernel_wide::<L, $r, $c>(sub, &mut part) } else { kernel_narrow::<L, $r, $c>(sub, &mut part) }
                        },)*
                        _ => unreachable!(),
                    }
                };
            }
            go!(1,1; 1,2; 1,3; 1,4; 2,1; 2,2; 2,3; 2,4);
            for c in 0..cc {
                for r in 0..rr {
                    sums[(c0 + c) * rows + r0 + r] = part[c * rr + r];
                }
            }
        }
    }
}

/// One tile of any shape: with `wide` (32 registers) the shapes the driver uses directly
/// (`stream_rows(g) × g`, and `3 × 5` for a short last group), everything else as strips.
///
/// # Safety
/// As for [`kernel`], for a `rows × cols` tile; the CPU must have the features of
/// [`kernel_wide`] if `wide`, else those of [`kernel_narrow`].
#[inline(always)]
unsafe fn any_tile<L: Load>(a: Args<L>, rows: usize, cols: usize, wide: bool, sums: &mut [f32; MAX_SUMS]) {
    macro_rules! go {
        ($($r:literal, $c:literal);*) => {
            match (rows, cols) {
                // SAFETY: the caller's guarantees, for exactly this shape.
                $(($r, $c) if wide => unsafe { kernel_wide::<L, $r, $c>(a, sums) },)*
                // SAFETY: as above.
                _ => unsafe { strips(a, rows, cols, wide, sums) },
            }
        };
    }
    go!(8,1; 6,2; 5,3; 4,4; 4,5; 3,5; 3,6; 3,7; 3,8)
}

/// A [`Run`] as raw pointers (`tail`: `[tiles · rows][STEP]`, row stride `STEP`).
#[derive(Clone, Copy)]
struct RunArgs<L> {
    w: L,
    rows: usize,
    tiles: usize,
    blocks: usize,
    x: *const f32,
    gstride: usize,
    group: usize,
    m: usize,
    last_steps: usize,
    tail: Option<Packed>,
    ahead: usize,
}

/// The loops of a run: tiles, then blocks in order, then groups (which find the tile's
/// weights in L1 after the first).
///
/// # Safety
/// Everything the run reads must be readable (as checked by `run`); the CPU must have the
/// features of [`kernel_wide`] if `wide`, else those of [`kernel_narrow`].
unsafe fn run_loops<L: Load>(a: RunArgs<L>, o: &mut Out<'_>, wide: bool) {
    let bsteps = K_BLOCK / STEP;
    for t in 0..a.tiles {
        for b in 0..a.blocks {
            let last = b + 1 == a.blocks;
            for g in 0..a.m.div_ceil(a.group) {
                let cols = a.group.min(a.m - g * a.group);
                let args = Args {
                    w: a.w.skip_rows(t * a.rows).at(b * K_BLOCK),
                    x: a.x.wrapping_add(g * a.gstride + b * bsteps * a.group * STEP),
                    xs: a.group * STEP,
                    steps: if last { a.last_steps } else { bsteps },
                    tail: if last { a.tail.map(|p| p.skip_rows(t * a.rows)) } else { None },
                    // The first group brings the weights in, the others find them in L1.
                    ahead: if g == 0 { a.ahead } else { 0 },
                };
                let mut sums = [0f32; MAX_SUMS];
                // SAFETY: this tile reads a part of what the caller vouched for.
                unsafe { any_tile(args, a.rows, cols, wide, &mut sums) };
                add_sums(o, &sums, a.rows, t, g * a.group, cols);
            }
        }
    }
}

/// # Safety
/// `r` must have passed the bounds checks of `run`; the CPU must have the features of
/// [`kernel_wide`].
pub(super) unsafe fn run_avx512<T: Elem>(r: &Run<'_, T>, o: &mut Out<'_>) {
    // SAFETY: the caller's guarantees.
    unsafe { dispatch(r, o, true) }
}

/// # Safety
/// `r` must have passed the bounds checks of `run`; the CPU must have the features of
/// [`kernel_narrow`].
pub(super) unsafe fn run_avx2<T: Elem>(r: &Run<'_, T>, o: &mut Out<'_>) {
    // SAFETY: the caller's guarantees.
    unsafe { dispatch(r, o, false) }
}

/// # Safety
/// As for `run_avx512` (`wide`) or `run_avx2`.
#[inline(always)]
unsafe fn dispatch<T: Elem>(r: &Run<'_, T>, o: &mut Out<'_>, wide: bool) {
    fn args<T, L>(r: &Run<'_, T>, w: L) -> RunArgs<L> {
        RunArgs {
            w,
            rows: r.rows,
            tiles: r.tiles,
            blocks: r.blocks,
            x: r.x.as_ptr(),
            gstride: r.gstride,
            group: r.group,
            m: r.m,
            last_steps: r.last_steps,
            tail: r.tail.map(|p| Packed { p: p.as_ptr(), ss: 0 }),
            ahead: r.ahead,
        }
    }
    // SAFETY: the caller's guarantees (bounds checked by `run`, features detected).
    unsafe {
        match r.w {
            Src::Direct { w, off, stride } => {
                run_loops(args(r, Direct { p: w.as_ptr().wrapping_add(off), stride }), o, wide);
            }
            Src::Packed { p, panel_rows } => {
                run_loops(RunArgs { ahead: 0, ..args(r, Packed { p: p.as_ptr(), ss: panel_rows * STEP }) }, o, wide);
            }
        }
    }
}

/// The whole steps of `pack_panel`.
///
/// # Safety
/// Rows `0..rows` of `w[off..]` (stride `stride`) must hold `whole` steps; `dst` must hold
/// `whole · panel_rows · STEP` floats; the CPU must have AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn pack_whole<T: Elem>(w: &[T], off: usize, stride: usize, rows: usize, whole: usize, panel_rows: usize, dst: &mut [f32]) {
    let src = Direct { p: w.as_ptr().wrapping_add(off), stride };
    let d = dst.as_mut_ptr();
    // SAFETY: the caller's guarantees.
    unsafe {
        for s in 0..whole {
            for r in 0..rows {
                let [a, b] = src.load(r, s);
                let o = d.add((s * panel_rows + r) * STEP);
                _mm256_storeu_ps(o, a);
                _mm256_storeu_ps(o.add(8), b);
            }
        }
    }
}
