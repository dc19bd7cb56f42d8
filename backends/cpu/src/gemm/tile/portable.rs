//! The plain-Rust kernel: the same lane structure without SIMD, the reference the x86 kernels are
//! pinned to in the tests, and what other CPUs run.

use super::super::weights::Elem;
use super::types::{K_BLOCK, MAX_SUMS, MAX_TILE, Out, Run, STEP, Src, add_sums, lane_index, reduce_lanes};

pub(super) fn pack_whole_portable<T: Elem>(w: &[T], off: usize, stride: usize, rows: usize, whole: usize, panel_rows: usize, dst: &mut [f32]) {
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

/// Plain-Rust fallback with the same lane structure (multiply then add: without the hardware
/// instruction `mul_add` is a slow libm call, so this agrees with the x86 kernels to rounding).
pub(super) fn run_portable<T: Elem>(r: &Run<'_, T>, o: &mut Out<'_>) {
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
