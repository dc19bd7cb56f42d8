//! Activations packed for the microkernel: per group of `group` rows, `[step][row][STEP]` f32
//! in the weights' lane order, zero-padded to whole steps (and the last group to `group` rows).
//!
//! Packing costs one pass over `x` (`m·k` floats, small next to the `n·k` weights) and gives the
//! kernel one contiguous stream per tile, in the lane order it needs.

use super::tile::{STEP, lane_index};

/// `x [m, k]` packed in groups of `group` rows: group `g` is `data[g·gs..(g + 1)·gs]`,
/// `gs = steps(k) · group · STEP`, and step `s` of row `c` of it starts at `(s·group + c)·STEP`.
pub(super) fn pack_x(x: &[f32], m: usize, k: usize, group: usize, paired: bool) -> Vec<f32> {
    let steps = k.div_ceil(STEP);
    let gs = steps * group * STEP;
    let groups = m.div_ceil(group);
    let mut out = vec![0f32; groups * gs];
    for i in 0..m {
        let (g, c) = (i / group, i % group);
        let row = &x[i * k..(i + 1) * k];
        let dst = &mut out[g * gs..(g + 1) * gs];
        for s in 0..steps {
            let d = &mut dst[(s * group + c) * STEP..][..STEP];
            let src = &row[s * STEP..row.len().min((s + 1) * STEP)];
            if src.len() == STEP && !paired {
                d.copy_from_slice(src);
                continue;
            }
            for h in 0..2 {
                for l in 0..8 {
                    d[h * 8 + l] = src.get(lane_index(paired, h, l)).copied().unwrap_or(0.0);
                }
            }
        }
    }
    out
}
