//! The shapes and sinks of a tile run, and the lane order every kernel variant shares.

/// Elements of `k` per kernel step (two 8-lane halves).
pub(in super::super) const STEP: usize = 16;
/// Elements of `k` per reduction block, a multiple of [`STEP`]: 8 packed activation rows of a
/// block (16 KiB) stay in L1 while the weights stream past them.
pub(in super::super) const K_BLOCK: usize = 512;
/// The most weight rows, or activation rows, a tile has.
pub(in super::super) const MAX_TILE: usize = 8;
/// The most outputs a tile has (`rows · cols`), the size of its `sums`.
pub(in super::super) const MAX_SUMS: usize = 32;

/// Where a tile's weight rows come from.
#[derive(Clone, Copy)]
pub(in super::super) enum Src<'a, T> {
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
pub(in super::super) struct Run<'a, T> {
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
pub(in super::super) struct Out<'a> {
    pub out: &'a mut [f32],
    pub nb: usize,
    pub jr: usize,
    pub valid: usize,
}

/// Weight rows per tile against a group of `m <= MAX_TILE` activation rows: as many as the 32
/// vector registers of AVX-512VL allow (`rows·m` accumulators + `2·rows` weights).
pub(in super::super) fn stream_rows(m: usize) -> usize {
    match m {
        1 => 8,
        2 => 6,
        3 => 5,
        4 | 5 => 4,
        _ => 3,
    }
}

/// Adds one tile's block sums (`sums[c·rows + r]`) for activation rows `i0..i0 + cols` and tile
/// `t` into `o`.
#[inline(always)]
pub(super) fn add_sums(o: &mut Out<'_>, sums: &[f32; MAX_SUMS], rows: usize, t: usize, i0: usize, cols: usize) {
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
pub(in super::super) fn lane_index(paired: bool, h: usize, l: usize) -> usize {
    if paired { 2 * l + h } else { h * 8 + l }
}

/// `(h0 + h1) + (h2 + h3)` with `h_l = a_l + a_{l+4}`: the lane reduction of every variant.
#[inline(always)]
pub(super) fn reduce_lanes(a: &[f32; 8]) -> f32 {
    let h: [f32; 4] = std::array::from_fn(|l| a[l] + a[l + 4]);
    (h[0] + h[1]) + (h[2] + h[3])
}
