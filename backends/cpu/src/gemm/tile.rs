//! The register-tile microkernel: `rows` weight rows against `cols` activation rows, in
//! dot-product form, over one reduction block of `k`.
//!
//! Both operands are k-contiguous (`x [m, k]`, `w [n, k]`), so the kernel keeps one 8-lane f32
//! accumulator per output `(c, r)` and walks the block in *steps* of 16 elements. A step splits
//! into two halves of 8 lanes: elements `0..8` and `8..16` for f32/f16 weights, the even and the
//! odd elements for bf16 weights (one 32-byte load of 16 bf16 gives both halves with one shift
//! and one mask, no shuffle). Activations come pre-packed in the same lane order ([`super::pack`]),
//! so the kernel only issues loads and FMAs.
//!
//! Every output element is computed the same way whatever the tile shape, the ISA variant, the
//! path and its position in the matrix (the *fixed reduction order*): `k` is cut into blocks
//! of [`K_BLOCK`]; each block is zero-padded to whole steps; in each step lane `l` adds, by
//! fused multiply-add, first its product from half 0, then the one from half 1; the 8 lanes
//! are then reduced as `(h0 + h1) + (h2 + h3)` with `h_l = a_l + a_{l+4}`; and the block sums
//! are added to 0 in order (by the caller). So `y[i, j]` does not depend on `m`, `n`, the
//! tiling or the split across threads: a column-sharded layer gives bit-identical outputs to
//! the unsharded one, and a token's logits do not change with the batch it is in.

use super::weights::Elem;

/// Elements of `k` per kernel step (two 8-lane halves).
pub(super) const STEP: usize = 16;
/// Elements of `k` per reduction block, a multiple of [`STEP`]: 8 packed activation rows of a
/// block (16 KiB) stay in L1 while the weights stream past them.
pub(super) const K_BLOCK: usize = 512;
/// The most weight rows, or activation rows, a tile has.
pub(super) const MAX_TILE: usize = 8;
/// The most outputs a tile has (`rows · cols`), the size of its `sums`.
pub(super) const MAX_SUMS: usize = 32;

/// Where a tile's weight rows come from.
#[derive(Clone, Copy)]
pub(super) enum Src<'a, T> {
    /// The weight matrix as stored: the tile's row `r`, step `s` starts at
    /// `w[off + r·stride + s·STEP]`.
    Direct { w: &'a [T], off: usize, stride: usize },
    /// Already widened and put in lane order: `[step][panel_rows][STEP]` f32 (see
    /// [`pack_panel`]); the tile uses rows `0..rows` of the panel.
    Packed { p: &'a [f32], panel_rows: usize },
}

/// A batch of tile calls: `tiles` consecutive tiles of `rows` weight rows, each against every
/// group of packed activation rows, over `blocks` consecutive reduction blocks (block sums added
/// to `out` in order).
pub(super) struct Run<'a, T> {
    /// `Direct`: the first tile's rows from the first block's start; tile `t` is `t·rows`
    /// rows further on. `Packed`: one panel of one block (`tiles == blocks == 1`).
    pub w: Src<'a, T>,
    /// Weight rows per tile (`1..=MAX_TILE`).
    pub rows: usize,
    pub tiles: usize,
    pub blocks: usize,
    /// Group 0's packed activations (`[step][group][STEP]` f32) from the first block's start.
    pub x: &'a [f32],
    /// Floats from one group's packed activations to the next one's.
    pub gstride: usize,
    /// Activation rows per group (the step stride of `x` is `group · STEP`), and in all: the
    /// groups are `m.div_ceil(group)`, the last with `m - (groups - 1)·group` rows.
    pub group: usize,
    pub m: usize,
    /// Whole steps of the last block read from `w` (the others have `K_BLOCK / STEP`).
    pub last_steps: usize,
    /// The last block's zero-padded final step, packed `[tiles · rows][STEP]`.
    pub tail: Option<&'a [f32]>,
    /// `Direct` only: while walking a row, also prefetch (into L2) the weights this many
    /// elements further on, once per cache line (0: none). Only the first group prefetches.
    pub ahead: usize,
}

/// Where a run's sums go: `out[(i·nb) + jr + t·rows + r] += Σ x[i] · w[t·rows + r]` for
/// activation row `i` and tile row `t·rows + r < valid` (rows past `valid` are padding).
pub(super) struct Out<'a> {
    pub out: &'a mut [f32],
    pub nb: usize,
    pub jr: usize,
    pub valid: usize,
}

/// Weight rows per tile against a group of `m <= MAX_TILE` activation rows: as many as the 32
/// vector registers of AVX-512VL allow (`rows·m` accumulators + `2·rows` weights).
pub(super) fn stream_rows(m: usize) -> usize {
    match m {
        1 => 8,
        2 => 6,
        3 => 5,
        4 | 5 => 4,
        _ => 3,
    }
}

/// Runs `r`: all its tiles, blocks and groups, adding the block sums into `o` in block order.
pub(super) fn run<T: Elem>(r: &Run<'_, T>, o: &mut Out<'_>) {
    assert!((1..=MAX_TILE).contains(&r.rows) && (1..=MAX_TILE).contains(&r.group) && r.rows * r.group <= MAX_SUMS);
    if r.m == 0 || r.tiles == 0 || r.blocks == 0 {
        return;
    }
    let bsteps = K_BLOCK / STEP;
    let xsteps = (r.blocks - 1) * bsteps + r.last_steps + usize::from(r.tail.is_some());
    let groups = r.m.div_ceil(r.group);
    assert!(r.x.len() >= (groups - 1) * r.gstride + xsteps * r.group * STEP, "packed activations too short");
    if let Some(tail) = r.tail {
        assert!(tail.len() >= r.tiles * r.rows * STEP, "tail panel too short");
    }
    match r.w {
        Src::Direct { w, off, stride } => {
            let wsteps = (r.blocks - 1) * bsteps + r.last_steps;
            if wsteps > 0 {
                assert!(off + (r.tiles * r.rows - 1) * stride + wsteps * STEP <= w.len(), "weight rows too short");
            }
        }
        Src::Packed { p, panel_rows } => {
            assert!(r.tiles == 1 && r.blocks == 1, "a packed panel is one tile of one block");
            assert!(r.rows <= panel_rows && p.len() >= r.last_steps * panel_rows * STEP, "packed panel too short");
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        if x86::avx512_available() {
            // SAFETY: the features were detected just above; everything `x86::run` reads (every
            // row, step, group and tail) was checked to lie in its slice just above.
            return unsafe { x86::run_avx512(r, o) };
        }
        if x86::avx2_available() {
            // SAFETY: as above.
            return unsafe { x86::run_avx2(r, o) };
        }
    }
    run_portable(r, o)
}

/// Adds one tile's block sums (`sums[c·rows + r]`) for activation rows `i0..i0 + cols` and tile
/// `t` into `o`.
#[inline(always)]
fn add_sums(o: &mut Out<'_>, sums: &[f32; MAX_SUMS], rows: usize, t: usize, i0: usize, cols: usize) {
    let valid = o.valid.saturating_sub(t * rows).min(rows);
    for c in 0..cols {
        let base = (i0 + c) * o.nb + o.jr + t * rows;
        for (r, v) in o.out[base..base + valid].iter_mut().enumerate() {
            *v += sums[c * rows + r];
        }
    }
}

/// Index in the block of lane `l` of half `h` of a step.
#[inline(always)]
pub(super) fn lane_index(paired: bool, h: usize, l: usize) -> usize {
    if paired { 2 * l + h } else { h * 8 + l }
}

/// Packs weight rows `w[off + r·stride ..][..len]` for `r < rows` (`len <= steps·STEP`) into
/// `dst [steps][panel_rows][STEP]` in lane order, widened to f32, zero-padded to whole steps and
/// to `panel_rows` rows.
pub(super) fn pack_panel<T: Elem>(w: &[T], off: usize, stride: usize, rows: usize, len: usize, panel_rows: usize, dst: &mut [f32]) {
    let steps = len.div_ceil(STEP);
    assert!(rows <= panel_rows && dst.len() >= steps * panel_rows * STEP);
    if rows > 0 && len > 0 {
        assert!(off + (rows - 1) * stride + len <= w.len(), "weight rows too short");
    }
    let whole = len / STEP;
    #[cfg(target_arch = "x86_64")]
    {
        if x86::avx2_available() {
            // SAFETY: AVX2/F16C detected just above; rows `0..rows`, `whole` steps each, were
            // checked to lie in `w`, and `dst` to hold `steps` panel steps.
            unsafe { x86::pack_whole(w, off, stride, rows, whole, panel_rows, dst) };
        } else {
            pack_whole_portable(w, off, stride, rows, whole, panel_rows, dst);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    pack_whole_portable(w, off, stride, rows, whole, panel_rows, dst);
    // Rows past `rows` are zero, and so is the part of the last step past `len`.
    for s in 0..steps {
        for r in 0..panel_rows {
            let d = &mut dst[(s * panel_rows + r) * STEP..][..STEP];
            if r >= rows {
                d.fill(0.0);
            } else if s == whole {
                pack_step_partial(&w[off + r * stride + s * STEP..off + r * stride + len], d);
            }
        }
    }
}

/// One step of one row, `src.len() < STEP`, zero-padded, in lane order.
pub(super) fn pack_step_partial<T: Elem>(src: &[T], dst: &mut [f32]) {
    for h in 0..2 {
        for l in 0..8 {
            let i = lane_index(T::PAIRED, h, l);
            dst[h * 8 + l] = src.get(i).map_or(0.0, |v| v.to_f32());
        }
    }
}

fn pack_whole_portable<T: Elem>(w: &[T], off: usize, stride: usize, rows: usize, whole: usize, panel_rows: usize, dst: &mut [f32]) {
    for s in 0..whole {
        for r in 0..rows {
            let src = &w[off + r * stride + s * STEP..][..STEP];
            let d = &mut dst[(s * panel_rows + r) * STEP..][..STEP];
            for h in 0..2 {
                for l in 0..8 {
                    d[h * 8 + l] = src[lane_index(T::PAIRED, h, l)].to_f32();
                }
            }
        }
    }
}

/// `(h0 + h1) + (h2 + h3)` with `h_l = a_l + a_{l+4}`: the lane reduction of every variant.
#[inline(always)]
fn reduce_lanes(a: &[f32; 8]) -> f32 {
    let h: [f32; 4] = std::array::from_fn(|l| a[l] + a[l + 4]);
    (h[0] + h[1]) + (h[2] + h[3])
}

/// Plain-Rust fallback with the same lane structure (multiply then add: without the hardware
/// instruction `mul_add` is a slow libm call, so this agrees with the x86 kernels to rounding).
fn run_portable<T: Elem>(r: &Run<'_, T>, o: &mut Out<'_>) {
    let bsteps = K_BLOCK / STEP;
    for t in 0..r.tiles {
        for b in 0..r.blocks {
            let last = b + 1 == r.blocks;
            let steps = if last { r.last_steps } else { bsteps };
            let tail = if last { r.tail.map(|p| &p[t * r.rows * STEP..]) } else { None };
            for g in 0..r.m.div_ceil(r.group) {
                let cols = r.group.min(r.m - g * r.group);
                let x = &r.x[g * r.gstride + b * bsteps * r.group * STEP..];
                let mut sums = [0f32; MAX_SUMS];
                tile_portable(r.w, t * r.rows, b * K_BLOCK, r.rows, x, r.group, cols, steps, tail, &mut sums);
                add_sums(o, &sums, r.rows, t, g * r.group, cols);
            }
        }
    }
}

/// One tile of the portable kernel: weight rows `r0..r0 + rows` of `w`, from element `k0`.
#[allow(clippy::too_many_arguments)]
fn tile_portable<T: Elem>(
    w: Src<'_, T>,
    r0: usize,
    k0: usize,
    rows: usize,
    x: &[f32],
    group: usize,
    cols: usize,
    steps: usize,
    tail: Option<&[f32]>,
    sums: &mut [f32; MAX_SUMS],
) {
    let mut acc = [[[0f32; 8]; MAX_TILE]; MAX_TILE];
    let xs = group * STEP;
    let mut wv = [[0f32; STEP]; MAX_TILE];
    for s in 0..steps + usize::from(tail.is_some()) {
        for (r, wr) in wv.iter_mut().enumerate().take(rows) {
            match (tail, s == steps, w) {
                (Some(tail), true, _) => wr.copy_from_slice(&tail[r * STEP..][..STEP]),
                (_, _, Src::Packed { p, panel_rows }) => wr.copy_from_slice(&p[(s * panel_rows + r0 + r) * STEP..][..STEP]),
                (_, _, Src::Direct { w, off, stride }) => {
                    let row = &w[off + (r0 + r) * stride + k0 + s * STEP..][..STEP];
                    for h in 0..2 {
                        for l in 0..8 {
                            wr[h * 8 + l] = row[lane_index(T::PAIRED, h, l)].to_f32();
                        }
                    }
                }
            }
        }
        for h in 0..2 {
            for c in 0..cols {
                let xv = &x[s * xs + c * STEP + h * 8..][..8];
                for r in 0..rows {
                    for l in 0..8 {
                        acc[c][r][l] += xv[l] * wv[r][h * 8 + l];
                    }
                }
            }
        }
    }
    for c in 0..cols {
        for r in 0..rows {
            sums[c * rows + r] = reduce_lanes(&acc[c][r]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use std::arch::x86_64::*;

    use super::{Elem, K_BLOCK, MAX_SUMS, Out, Run, STEP, Src, add_sums};

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
}

#[cfg(test)]
mod tests {
    //! The integration tests exercise whichever kernel this CPU dispatches to; these pin the
    //! other variants to it: the AVX2 strips must equal the AVX-512VL tiles bit for bit (same
    //! lane order), the portable kernel must agree to rounding (it has no FMA).
    use half::{bf16, f16};

    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32 / (1 << 24) as f32 - 0.5).collect()
    }

    /// The variants a run can take on this CPU, by name.
    type RunFn<T> = fn(&Run<'_, T>, &mut Out<'_>);

    fn variants<T: Elem>() -> Vec<(&'static str, RunFn<T>)> {
        let mut v: Vec<(&'static str, RunFn<T>)> = vec![("portable", run_portable::<T>)];
        #[cfg(target_arch = "x86_64")]
        {
            fn avx2<T: Elem>(r: &Run<'_, T>, o: &mut Out<'_>) {
                // SAFETY: only listed when AVX2 was detected; the runs below are built within
                // their slices (and `run` checks the same runs in the dispatch case).
                unsafe { x86::run_avx2(r, o) }
            }
            fn avx512<T: Elem>(r: &Run<'_, T>, o: &mut Out<'_>) {
                // SAFETY: only listed when AVX-512F/VL were detected; as above.
                unsafe { x86::run_avx512(r, o) }
            }
            if x86::avx2_available() {
                v.push(("avx2", avx2::<T>));
            }
            if x86::avx512_available() {
                v.push(("avx512", avx512::<T>));
            }
        }
        v.push(("dispatch", run::<T>));
        v
    }

    /// Every tile shape the drivers use (and some strips), over several tiles, groups and
    /// blocks with a partial last one, from the matrix and from packed panels, on every
    /// variant: the x86 variants must agree bit for bit, with each other and between a direct
    /// and a packed source; the portable one to rounding, and to an f64 reference.
    fn variants_agree<T: Elem>(conv: impl Fn(f32) -> T) {
        let shapes: [(usize, usize); 13] = [(8, 1), (6, 2), (5, 3), (4, 4), (4, 5), (3, 5), (3, 6), (3, 7), (3, 8), (8, 3), (1, 1), (2, 3), (7, 4)];
        for (rows, group) in shapes {
            let k = 2 * K_BLOCK + 9 + 16 * (rows % 2); // a partial last block: tail-only or whole steps + tail
            let m = (2 * group).saturating_sub(1); // a full group and a short one
            let tiles = 2;
            let n = tiles * rows;
            let wv: Vec<T> = data(n * k, 1).into_iter().map(&conv).collect();
            let xv = data(m * k, 2);
            let xp = super::super::pack::pack_x(&xv, m, k, group, T::PAIRED);
            let gstride = k.div_ceil(STEP) * group * STEP;
            let (blocks, last_len) = (k.div_ceil(K_BLOCK), k - (k.div_ceil(K_BLOCK) - 1) * K_BLOCK);
            let mut tail = vec![0f32; n * STEP];
            for r in 0..n {
                let row = &wv[r * k..(r + 1) * k];
                pack_step_partial(&row[k - last_len % STEP..], &mut tail[r * STEP..(r + 1) * STEP]);
            }
            let direct = Run {
                w: Src::Direct { w: &wv, off: 0, stride: k },
                rows,
                tiles,
                blocks,
                x: &xp,
                gstride,
                group,
                m,
                last_steps: last_len / STEP,
                tail: Some(&tail),
                ahead: 3 * k,
            };
            // The last block again, per tile from a packed panel.
            let lk0 = (blocks - 1) * K_BLOCK;
            let mut panel = vec![0f32; last_len.div_ceil(STEP) * MAX_TILE * STEP];
            let mut results = Vec::new();
            for (name, f) in variants::<T>() {
                let mut full = vec![0f32; m * n];
                f(&direct, &mut Out { out: &mut full, nb: n, jr: 0, valid: n });
                let mut last_direct = vec![0f32; m * n];
                let one = Run { w: Src::Direct { w: &wv, off: lk0, stride: k }, blocks: 1, x: &xp[lk0 / STEP * group * STEP..], ..direct };
                f(&one, &mut Out { out: &mut last_direct, nb: n, jr: 0, valid: n });
                let mut last_packed = vec![0f32; m * n];
                for t in 0..tiles {
                    let valid = rows - usize::from(t == 1); // a short panel: zero rows are padding
                    pack_panel(&wv, t * rows * k + lk0, k, valid, last_len, MAX_TILE, &mut panel);
                    let p = Run {
                        w: Src::Packed { p: &panel, panel_rows: MAX_TILE },
                        tiles: 1,
                        last_steps: last_len.div_ceil(STEP),
                        tail: None,
                        ..one
                    };
                    f(&p, &mut Out { out: &mut last_packed, nb: n, jr: t * rows, valid });
                }
                for i in 0..m {
                    last_packed[i * n + n - 1] = last_direct[i * n + n - 1]; // not computed above
                }
                assert_eq!(last_direct, last_packed, "{name} ({rows}x{group}): packed panel vs direct rows");
                results.push((name, full));
            }
            let want = &results[0].1;
            for i in 0..m {
                for j in 0..n {
                    let (mut s, mut mag) = (0f64, 0f64);
                    for l in 0..k {
                        let p = f64::from(xv[i * k + l]) * f64::from(wv[j * k + l].to_f32());
                        s += p;
                        mag += p.abs();
                    }
                    let got = f64::from(want[i * n + j]);
                    assert!((got - s).abs() <= 1e-5 * mag, "portable ({rows}x{group}) [{i},{j}]: {got} vs {s}");
                }
            }
            for (name, got) in &results[1..] {
                for (a, b) in got.iter().zip(want) {
                    assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{name} vs portable ({rows}x{group}): {a} vs {b}");
                }
                assert_eq!(got, &results[1].1, "{name} vs {} ({rows}x{group}): bit for bit", results[1].0);
            }
        }
    }

    #[test]
    fn kernel_variants_agree() {
        variants_agree::<f32>(|v| v);
        variants_agree::<bf16>(bf16::from_f32);
        variants_agree::<f16>(f16::from_f32);
    }
}
