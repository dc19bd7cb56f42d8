//! The paged KV cache: writes (exact) and causal GQA attention (within [`Op::Attention`]) through
//! scrambled block tables, with padding rows, sliding windows, prefill and decode rows mixed,
//! huge scores; rows outside the cache are errors.

use finetp_core::backend::{AttentionParams, DType, Device, Kernels, KvIndex, PAD_SLOT};

use super::data::{fail, host, host_u32};
use super::{Case, Env, ensure};
use crate::Rng;
use crate::tolerance::{Op, close};

pub(super) fn cases<B: Device>() -> Vec<Case<B>> {
    vec![
        Case::new("kv_cache_write_and_attention_through_block_tables_equal_the_cpu", &["Kernels::kv_cache_write", "Kernels::kv_cache_attention"], paged::<B>),
        Case::new("kv_cache_rows_outside_the_cache_are_errors", &["Kernels::kv_cache_write", "Kernels::kv_cache_attention"], outside::<B>),
    ]
}

/// One attention shape: heads, kv heads, dk, dv, block size, blocks per slot, scale, window,
/// and the step's rows as (slot, position).
struct Shape {
    nh: usize,
    nkv: usize,
    dk: usize,
    dv: usize,
    bs: usize,
    max_blocks: usize,
    scale: f32,
    window: Option<u32>,
    rows: Vec<(u32, u32)>,
}

fn shapes() -> Vec<Shape> {
    let pad = (PAD_SLOT, 0);
    let s = |nh, nkv, dk, dv, bs, max_blocks, scale, window, rows| Shape { nh, nkv, dk, dv, bs, max_blocks, scale, window, rows };
    vec![
        s(4, 4, 8, 8, 4, 1, 0.35, None, vec![(0, 0)]),
        s(8, 2, 16, 12, 4, 3, 0.25, None, vec![(1, 5), pad, (0, 9), (2, 0)]),
        s(6, 3, 7, 9, 3, 3, 0.4, Some(3), vec![(0, 0), (0, 1), (0, 2), (0, 3), (1, 6), pad]),
        s(9, 3, 64, 64, 16, 13, 0.125, None, (0..5).map(|i| (1, 150 + i)).chain([(0, 199), pad]).collect()),
        s(9, 3, 64, 64, 16, 13, 0.125, Some(100), vec![(2, 180), (1, 99), (0, 5)]),
        s(2, 1, 4, 4, 2, 3, 400.0, None, vec![(0, 3), (0, 4)]),
        s(4, 2, 8, 8, 2, 2, 1.0, None, vec![]),
        s(4, 2, 8, 8, 2, 2, 1.0, None, vec![pad, pad]),
    ]
}

fn paged<B: Device>(env: &Env<B>) -> Result<(), String> {
    let p = env.pair();
    let mut r = Rng::new(8);
    for sh in shapes() {
        let slots_n = 3;
        let nb = slots_n * sh.max_blocks + 2; // two spare blocks nobody owns
        // Every slot owns distinct blocks, in a scrambled order.
        let mut blocks: Vec<u32> = (0..nb as u32).collect();
        for i in (1..blocks.len()).rev() {
            blocks.swap(i, r.below(i + 1));
        }
        let table: Vec<u32> = blocks[..slots_n * sh.max_blocks].to_vec();
        let t = sh.rows.len();
        let slots: Vec<u32> = sh.rows.iter().map(|x| x.0).collect();
        let pos: Vec<u32> = sh.rows.iter().map(|x| x.1).collect();
        let what = format!("attention nh {} nkv {} dk {} dv {} block {} window {:?} rows {:?}", sh.nh, sh.nkv, sh.dk, sh.dv, sh.bs, sh.window, sh.rows);
        // Random history in the pools, then this step's rows written over it.
        let (mut kg, mut kc) = p.acts(&r.f32s(nb * sh.bs * sh.nkv * sh.dk), &[nb, sh.bs, sh.nkv, sh.dk])?;
        let (mut vg, mut vc) = p.acts(&r.f32s(nb * sh.bs * sh.nkv * sh.dv), &[nb, sh.bs, sh.nkv, sh.dv])?;
        let (tg, tc) = p.both(&host_u32(&table, &[slots_n, sh.max_blocks]))?;
        let (sg, sc) = p.both(&host_u32(&slots, &[t]))?;
        let (pg, pc) = p.both(&host_u32(&pos, &[t]))?;
        let (ig, ic) = (KvIndex { block_table: &tg, slots: &sg, positions: &pg }, KvIndex { block_table: &tc, slots: &sc, positions: &pc });
        let (knew_g, knew_c) = p.acts(&r.f32s(t * sh.nkv * sh.dk), &[t, sh.nkv, sh.dk])?;
        let (vnew_g, vnew_c) = p.acts(&r.f32s(t * sh.nkv * sh.dv), &[t, sh.nkv, sh.dv])?;
        p.be.kv_cache_write(&knew_g, &mut kg, &ig).map_err(fail(&what))?;
        p.be.kv_cache_write(&vnew_g, &mut vg, &ig).map_err(fail(&what))?;
        p.cpu.kv_cache_write(&knew_c, &mut kc, &ic).map_err(fail(&what))?;
        p.cpu.kv_cache_write(&vnew_c, &mut vc, &ic).map_err(fail(&what))?;
        for (name, (g, c)) in [("k", p.f32s(&kg, &kc)?), ("v", p.f32s(&vg, &vc)?)] {
            let tol = if p.act() == DType::F32 { 0.0 } else { Op::RmsNorm.tol(p.act()) };
            close(&g, &c, tol, &format!("{what}: kv_cache_write of {name}"))?;
        }
        let (qg, qc) = p.acts(&r.f32s(t * sh.nh * sh.dk), &[t, sh.nh, sh.dk])?;
        let (mut yg, mut yc) = p.zeros(&[t, sh.nh, sh.dv])?;
        let params = AttentionParams { scale: sh.scale, sliding_window: sh.window };
        p.be.kv_cache_attention(&qg, &kg, &vg, &ig, &params, &mut yg).map_err(fail(&what))?;
        p.cpu.kv_cache_attention(&qc, &kc, &vc, &ic, &params, &mut yc).map_err(fail(&what))?;
        let (got, want) = p.f32s(&yg, &yc)?;
        close(&got, &want, Op::Attention.tol(p.act()), &what)?;
        let row = sh.nh * sh.dv;
        for (i, _) in slots.iter().enumerate().filter(|(_, s)| **s == PAD_SLOT) {
            ensure(got[i * row..(i + 1) * row].iter().all(|v| v.to_bits() == 0), || format!("{what}: padding row {i} is not +0"))?;
        }
    }
    Ok(())
}

/// A row past its slot's blocks, a slot past the table, and a table entry past the pool (the
/// row's own block, or an earlier one only attention reads) are each an error of the call or of
/// the next sync point (where a backend only sees them on the device), never a panic.
fn outside<B: Device>(env: &Env<B>) -> Result<(), String> {
    let be = &env.be;
    let act = be.activation_dtype();
    let up = |h| be.upload(&h).map_err(fail("upload"));
    for (table, slot, pos, write_fails, why) in [
        (vec![0u32, 1], 0u32, 4u32, true, "a position past the slot's blocks"),
        (vec![0, 1], 1, 0, true, "a slot past the block table"),
        (vec![0, 7], 0, 2, true, "a block past the pool"),
        (vec![7, 0], 0, 2, false, "an earlier block, that only attention reads, past the pool"),
    ] {
        let tt = up(host_u32(&table, &[1, 2]))?;
        let (s, ps) = (up(host_u32(&[slot], &[1]))?, up(host_u32(&[pos], &[1]))?);
        let index = KvIndex { block_table: &tt, slots: &s, positions: &ps };
        let x = up(host(&[1.0; 2], &[1, 1, 2], act))?;
        let mut cache = be.zeros(&[2, 2, 1, 2], act).map_err(fail("zeros"))?;
        let wrote = be.kv_cache_write(&x, &mut cache, &index).and_then(|()| be.download(&cache).map(drop));
        ensure(wrote.is_err() == write_fails, || format!("kv_cache_write of {why}: {wrote:?}"))?;
        let mut y = be.zeros(&[1, 1, 2], act).map_err(fail("zeros"))?;
        let params = AttentionParams { scale: 1.0, sliding_window: None };
        let attended = be.kv_cache_attention(&x, &cache, &cache, &index, &params, &mut y).and_then(|()| be.download(&y).map(drop));
        ensure(attended.is_err(), || format!("kv_cache_attention of {why} was accepted"))?;
        // The backend stays usable.
        be.synchronize().map_err(fail("synchronize after a refused row"))?;
    }
    Ok(())
}
