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

mod portable;
#[cfg(test)]
mod tests;
mod types;
#[cfg(target_arch = "x86_64")]
mod x86;

use super::weights::Elem;
use portable::{pack_whole_portable, run_portable};
pub(super) use types::{K_BLOCK, MAX_SUMS, MAX_TILE, Out, Run, STEP, Src, lane_index, stream_rows};

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
