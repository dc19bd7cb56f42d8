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
