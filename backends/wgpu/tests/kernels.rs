//! Every decoder kernel on wgpu against the CPU backend (the reference), on random inputs.
//!
//! Tolerances, stated again in each assert message. `assert_close(.., tol)` bounds
//! `|wgpu - cpu| / max(1, |cpu|)`, i.e. relative for values above 1 and absolute below:
//! - exact (bit for bit): uploads/downloads, copies, gathers (embedding), add, scale, the KV
//!   write, argmax and top-k, and RMSNorm when the adapter has `shader-f64` (the CPU sums in
//!   f64 too);
//! - 1e-6: RMSNorm without f64, SiLU·mul (the driver's `exp` and division are not the C
//!   library's);
//! - 2e-6: RoPE at positions below 4096 (the driver's `sin`/`cos`: lavapipe's differ from the
//!   C library's in the last bit for about 1 angle in 20);
//! - 1e-5: attention (scores, `exp`, a sum over up to 200 keys).
//!
//! Each wgpu test skips with a printed reason when the machine has no adapter, unless
//! `FINETP_REQUIRE_WGPU=1` (CI), where that is a failure.

mod common;

use common::*;
use finetp_backend_wgpu::WgpuOptions;
use finetp_core::backend::{Backend, DType, HostData, HostTensor, Kernels, PAD_SLOT, RopeStyle};

#[test]
fn upload_download_round_trips_every_dtype_and_odd_and_empty_shapes() {
    let Some(be) = backend() else { return };
    let mut r = Rng::new(1);
    for shape in [vec![0], vec![1], vec![3], vec![5, 7], vec![2, 0, 3], vec![4, 3, 5]] {
        let n: usize = shape.iter().product();
        for dt in [DType::F32, DType::BF16, DType::F16] {
            let h = host(&r.f32s(n), &shape, dt);
            assert_eq!(be.download(&be.upload(&h).unwrap()).unwrap(), h, "{dt} {shape:?}: download(upload(h)) == h exactly");
        }
        let u = host_u32(&(0..n as u32).map(|i| i.wrapping_mul(2_654_435_761)).collect::<Vec<_>>(), &shape);
        assert_eq!(be.download(&be.upload(&u).unwrap()).unwrap(), u, "u32 {shape:?}: exact");
        let z = be.zeros(&shape, DType::BF16).unwrap();
        assert_eq!(be.download(&z).unwrap().to_f32_vec().unwrap(), vec![0.0; n], "zeros are zeros");
    }
}

#[test]
fn write_fill_zero_and_copy_block_are_exact() {
    let Some(be) = backend() else { return };
    let cpu = cpu();
    let mut r = Rng::new(2);
    for dt in [DType::F32, DType::U32, DType::BF16, DType::F16] {
        let (sr, sc, dr, dc) = (7, 9, 6, 11);
        let src = if dt == DType::U32 { host_u32(&(0..(sr * sc) as u32).collect::<Vec<_>>(), &[sr, sc]) } else { host(&r.f32s(sr * sc), &[sr, sc], dt) };
        let dst = if dt == DType::U32 { host_u32(&vec![5; dr * dc], &[dr, dc]) } else { host(&r.f32s(dr * dc), &[dr, dc], dt) };
        // Blocks: odd offsets and widths (16-bit halves of shared words), whole rows, one row.
        for (a, b, c, d, rows, cols) in [(1, 2, 3, 5, 3, 5), (0, 0, 0, 0, 6, 9), (2, 0, 1, 2, 4, 9), (6, 3, 5, 10, 1, 1), (0, 1, 0, 0, 0, 3)] {
            let (sg, scp) = both(&be, &cpu, &src);
            let (mut dg, mut dcp) = both(&be, &cpu, &dst);
            be.copy_block(&sg, a, b, &mut dg, c, d, rows, cols).unwrap();
            cpu.copy_block(&scp, a, b, &mut dcp, c, d, rows, cols).unwrap();
            assert_eq!(be.download(&dg).unwrap(), cpu.download(&dcp).unwrap(), "{dt} copy_block {rows}x{cols} ({a},{b})->({c},{d}): exact");
        }
        // Whole-width rows of an f32 matrix into another of the same width: a buffer copy.
        let (mut dg, _) = both(&be, &cpu, &dst);
        be.write(&mut dg, &dst).unwrap();
        assert_eq!(be.download(&dg).unwrap(), dst, "{dt} write: exact");
        be.fill_zero(&mut dg).unwrap();
        assert!(be.download(&dg).unwrap().to_f32_vec().unwrap_or_else(|| vec![0.0; dr * dc]).iter().all(|v| *v == 0.0), "{dt} fill_zero");
    }
    // write is ordered after earlier enqueued work on the same tensor.
    let a = host(&[1.0, 2.0, 3.0], &[3], DType::F32);
    let b = host(&[10.0, 20.0, 30.0], &[3], DType::F32);
    let mut t = be.upload(&a).unwrap();
    be.scale(&mut t, 2.0).unwrap();
    be.write(&mut t, &b).unwrap();
    be.scale(&mut t, 0.5).unwrap();
    assert_eq!(f32s_of(&be, &t), vec![5.0, 10.0, 15.0], "scale, write, scale run in issue order");
}

#[test]
fn embedding_gathers_exactly_with_shard_masking_for_every_table_dtype() {
    let Some(be) = backend() else { return };
    let cpu = cpu();
    let mut r = Rng::new(3);
    let (rows, h) = (37, 19);
    let ids: Vec<u32> = (0..23).map(|_| r.below(100)).chain([0, 29, 30, 66, 67, u32::MAX]).collect();
    for dt in [DType::F32, DType::BF16, DType::F16] {
        let table = host(&r.f32s(rows * h), &[rows, h], dt);
        let (tg, tc) = both(&be, &cpu, &table);
        let (ig, ic) = both(&be, &cpu, &host_u32(&ids, &[ids.len()]));
        for row_start in [0, 30, 1 << 20] {
            let (mut yg, mut yc) = zeros_both(&be, &cpu, &[ids.len(), h], DType::F32);
            be.embedding(&ig, &tg, row_start, &mut yg).unwrap();
            cpu.embedding(&ic, &tc, row_start, &mut yc).unwrap();
            assert_bits(&f32s_of(&be, &yg), &cpu_f32s(&yc), &format!("embedding {dt} row_start {row_start}: exact"));
        }
    }
}

#[test]
fn embedding_of_a_table_larger_than_one_binding_reads_it_through_windows() {
    let Some(be) = open(WgpuOptions { max_binding_bytes: Some(4096), ..Default::default() }) else { return };
    let cpu = cpu();
    let mut r = Rng::new(4);
    let (rows, h) = (301, 13); // 15.6 KB of f32: four windows of 4 KiB
    let ids: Vec<u32> = (0..64).map(|_| r.below(rows as u32 + 40)).collect();
    for dt in [DType::F32, DType::BF16] {
        let table = host(&r.f32s(rows * h), &[rows, h], dt);
        let (tg, tc) = both(&be, &cpu, &table);
        let (ig, ic) = both(&be, &cpu, &host_u32(&ids, &[ids.len()]));
        let (mut yg, mut yc) = zeros_both(&be, &cpu, &[ids.len(), h], DType::F32);
        be.embedding(&ig, &tg, 20, &mut yg).unwrap();
        cpu.embedding(&ic, &tc, 20, &mut yc).unwrap();
        assert_bits(&f32s_of(&be, &yg), &cpu_f32s(&yc), &format!("split embedding {dt}: exact"));
    }
}

fn rms_case(be: &finetp_backend_wgpu::WgpuBackend, exact: bool) {
    let cpu = cpu();
    let mut r = Rng::new(5);
    for (shape, h) in [(vec![1, 576], 576), (vec![7, 3, 64], 64), (vec![5, 1001], 1001), (vec![0, 8], 8)] {
        for dt in [DType::F32, DType::BF16, DType::F16] {
            let n: usize = shape.iter().product();
            let x = host(&r.f32s(n).iter().map(|v| v * 3.0).collect::<Vec<_>>(), &shape, DType::F32);
            let w = host(&r.f32s(h), &[h], dt);
            let (xg, xc) = both(be, &cpu, &x);
            let (wg, wc) = both(be, &cpu, &w);
            let (mut yg, mut yc) = zeros_both(be, &cpu, &shape, DType::F32);
            be.rms_norm(&xg, &wg, 1e-5, &mut yg).unwrap();
            cpu.rms_norm(&xc, &wc, 1e-5, &mut yc).unwrap();
            let what = format!("rms_norm {dt} {shape:?}");
            if exact {
                assert_bits(&f32s_of(be, &yg), &cpu_f32s(&yc), &format!("{what} (f64 sum, as the CPU): exact"));
            } else {
                assert_close(&f32s_of(be, &yg), &cpu_f32s(&yc), 1e-6, &format!("{what} (f32 sum): tol 1e-6"));
            }
        }
    }
}

#[test]
fn rms_norm_matches_the_cpu() {
    let Some(be) = backend() else { return };
    let exact = be.uses_shader_f64();
    if !exact {
        eprintln!("note: the adapter has no shader-f64; RMSNorm is checked within 1e-6 instead of exactly");
    }
    rms_case(&be, exact);
    // The f32 fallback is what adapters without shader-f64 run: test it here too.
    let Some(be32) = open(WgpuOptions { shader_f64: false, ..Default::default() }) else { return };
    rms_case(&be32, false);
}

#[test]
fn rope_matches_the_cpu_for_both_styles_and_partial_rotation() {
    let Some(be) = backend() else { return };
    let cpu = cpu();
    let mut r = Rng::new(6);
    for (t, nh, d, half) in [(6, 3, 64, 32), (5, 2, 10, 2), (1, 9, 64, 32), (0, 2, 8, 4)] {
        let positions: Vec<u32> = (0..t as u32).map(|i| [0, 1, 7, 100, 513, 4095][i as usize % 6]).collect();
        let inv: Vec<f32> = (0..half).map(|i| 1.0 / 10000f32.powf(2.0 * i as f32 / (2 * half) as f32)).collect();
        for style in [RopeStyle::Neox, RopeStyle::Interleaved] {
            let x = host(&r.f32s(t * nh * d), &[t, nh, d], DType::F32);
            let (mut xg, mut xc) = both(&be, &cpu, &x);
            let (pg, pc) = both(&be, &cpu, &host_u32(&positions, &[t]));
            let (fg, fc) = both(&be, &cpu, &host(&inv, &[half], DType::F32));
            be.rope(&mut xg, &pg, &fg, style).unwrap();
            cpu.rope(&mut xc, &pc, &fc, style).unwrap();
            assert_close(&f32s_of(&be, &xg), &cpu_f32s(&xc), 2e-6, &format!("rope {style:?} [{t},{nh},{d}] half {half}: tol 2e-6"));
        }
    }
}

#[test]
fn silu_mul_add_and_scale_match_the_cpu() {
    let Some(be) = backend() else { return };
    let cpu = cpu();
    let mut r = Rng::new(7);
    for (t, i) in [(1, 1536), (9, 77), (0, 5)] {
        let gu = host(&r.f32s(t * 2 * i).iter().map(|v| v * 12.0).collect::<Vec<_>>(), &[t, 2 * i], DType::F32);
        let (gg, gc) = both(&be, &cpu, &gu);
        let (mut yg, mut yc) = zeros_both(&be, &cpu, &[t, i], DType::F32);
        be.silu_mul(&gg, &mut yg).unwrap();
        cpu.silu_mul(&gc, &mut yc).unwrap();
        assert_close(&f32s_of(&be, &yg), &cpu_f32s(&yc), 1e-6, &format!("silu_mul [{t},{i}]: tol 1e-6"));

        let a = host(&r.f32s(t * i), &[t, i], DType::F32);
        let b = host(&r.f32s(t * i), &[t, i], DType::F32);
        let (mut ag, mut ac) = both(&be, &cpu, &a);
        let (bg, bc) = both(&be, &cpu, &b);
        be.add_assign(&mut ag, &bg).unwrap();
        cpu.add_assign(&mut ac, &bc).unwrap();
        be.scale(&mut ag, 0.37).unwrap();
        cpu.scale(&mut ac, 0.37).unwrap();
        assert_bits(&f32s_of(&be, &ag), &cpu_f32s(&ac), &format!("add_assign then scale [{t},{i}]: exact"));
    }
}

#[test]
fn kv_cache_write_and_attention_match_the_cpu() {
    let Some(be) = backend() else { return };
    let cpu = cpu();
    let mut r = Rng::new(8);
    let pad = (PAD_SLOT, 0);
    // (heads, kv heads, dk, dv, rows per slot, scale, rows as (slot, position)): decode rows of
    // several slots with padding, a prefill next to decode rows, GQA, dk != dv, odd dims,
    // long contexts, huge scores (the max subtraction matters), no rows, only padding.
    type Case = (usize, usize, usize, usize, usize, f32, Vec<(u32, u32)>);
    let cases: Vec<Case> = vec![
        (4, 4, 8, 8, 4, 0.35, vec![(0, 0)]),
        (8, 2, 16, 12, 10, 0.25, vec![(1, 5), pad, (0, 9), (2, 0)]),
        (6, 3, 7, 9, 8, 0.4, vec![(0, 0), (0, 1), (0, 2), (0, 3), (1, 6), pad]),
        (9, 3, 64, 64, 200, 0.125, (0..5).map(|i| (1, 150 + i)).chain([(0, 199), pad]).collect()),
        (2, 1, 4, 4, 5, 400.0, vec![(0, 3), (0, 4)]),
        (4, 2, 8, 8, 3, 1.0, vec![]),
        (4, 2, 8, 8, 3, 1.0, vec![pad, pad]),
    ];
    for (nh, nkv, dk, dv, l, scale, rows) in cases {
        let (s, t) = (3, rows.len());
        let slots: Vec<u32> = rows.iter().map(|r| r.0).collect();
        let pos: Vec<u32> = rows.iter().map(|r| r.1).collect();
        let what = format!("attention nh {nh} nkv {nkv} dk {dk} dv {dv} L {l} rows {rows:?}");
        // Fill the caches with random history, then write this step's rows over it.
        let (mut kg, mut kc) = both(&be, &cpu, &host(&r.f32s(s * l * nkv * dk), &[s, l, nkv, dk], DType::F32));
        let (mut vg, mut vc) = both(&be, &cpu, &host(&r.f32s(s * l * nkv * dv), &[s, l, nkv, dv], DType::F32));
        let (sg, sc) = both(&be, &cpu, &host_u32(&slots, &[t]));
        let (pg, pc) = both(&be, &cpu, &host_u32(&pos, &[t]));
        let (knew_g, knew_c) = both(&be, &cpu, &host(&r.f32s(t * nkv * dk), &[t, nkv, dk], DType::F32));
        let (vnew_g, vnew_c) = both(&be, &cpu, &host(&r.f32s(t * nkv * dv), &[t, nkv, dv], DType::F32));
        be.kv_cache_write(&knew_g, &mut kg, &sg, &pg).unwrap();
        be.kv_cache_write(&vnew_g, &mut vg, &sg, &pg).unwrap();
        cpu.kv_cache_write(&knew_c, &mut kc, &sc, &pc).unwrap();
        cpu.kv_cache_write(&vnew_c, &mut vc, &sc, &pc).unwrap();
        assert_eq!(be.download(&kg).unwrap(), cpu.download(&kc).unwrap(), "{what}: kv_cache_write of k: exact");
        assert_eq!(be.download(&vg).unwrap(), cpu.download(&vc).unwrap(), "{what}: kv_cache_write of v: exact");
        let (qg, qc) = both(&be, &cpu, &host(&r.f32s(t * nh * dk), &[t, nh, dk], DType::F32));
        let (mut yg, mut yc) = zeros_both(&be, &cpu, &[t, nh, dv], DType::F32);
        be.kv_cache_attention(&qg, &kg, &vg, &sg, &pg, scale, &mut yg).unwrap();
        cpu.kv_cache_attention(&qc, &kc, &vc, &sc, &pc, scale, &mut yc).unwrap();
        let got = f32s_of(&be, &yg);
        assert_close(&got, &cpu_f32s(&yc), 1e-5, &format!("{what}: tol 1e-5"));
        for (i, _) in slots.iter().enumerate().filter(|(_, s)| **s == PAD_SLOT) {
            assert!(got[i * nh * dv..(i + 1) * nh * dv].iter().all(|v| v.to_bits() == 0), "{what}: padding row {i} is +0.0");
        }
    }
}

#[test]
fn argmax_and_top_k_match_the_cpu_with_ties_and_nan() {
    let Some(be) = backend() else { return };
    let cpu = cpu();
    let mut r = Rng::new(9);
    for (t, v) in [(1, 49152 / 2), (3, 1000), (4, 1025), (2, 1), (0, 7)] {
        let mut x = r.f32s(t * v);
        if t >= 3 {
            // Ties (the first wins), a NaN (never picked over a number), an all-NaN row.
            x[v + 10] = 5.0;
            x[v + 900] = 5.0;
            x[2 * v + 3] = f32::NAN;
            x[2 * v + 4] = 7.0;
        }
        if t == 4 {
            x[3 * v..4 * v].fill(f32::NAN);
        }
        let h = host(&x, &[t, v], DType::F32);
        let (g, c) = both(&be, &cpu, &h);
        assert_eq!(be.argmax(&g).unwrap(), cpu.argmax(&c).unwrap(), "argmax [{t},{v}]: exact");
        // Compared as bits: NaN logits are selected (last) too.
        let bits = |r: Vec<Vec<(f32, u32)>>| -> Vec<Vec<(u32, u32)>> { r.into_iter().map(|row| row.into_iter().map(|(x, i)| (x.to_bits(), i)).collect()).collect() };
        for k in [0, 1, 5, v + 3] {
            let (gk, ck) = (bits(be.top_k(&g, k).unwrap()), bits(cpu.top_k(&c, k).unwrap()));
            assert!(gk == ck, "top_k {k} of [{t},{v}]: exact (first differing row: {:?})", gk.iter().zip(&ck).position(|(a, b)| a != b));
        }
    }
    let h = HostTensor::new(HostData::F32(vec![]), &[2, 0]).unwrap();
    assert!(be.argmax(&be.upload(&h).unwrap()).is_err(), "rows of zero logits are an error, as on the CPU");
}
