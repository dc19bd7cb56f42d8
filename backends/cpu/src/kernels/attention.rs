//! The paged KV cache on the CPU: storing new rows, and causal GQA attention of every query row
//! over its own sequence's cached keys (through the block table; see
//! [`KvIndex`](finetp_core::backend::KvIndex)).
//!
//! Attention runs tiled with an online softmax ([`super::flash`]): one task per KV head and
//! tile of consecutive rows of one sequence, so a long prefill reads each cached key a few
//! times per tile instead of once per query row and head, and holds one block of scores per
//! row. Decode (one row per sequence) and prefill run the same kernel and give the same row the
//! same bits.

use finetp_core::backend::checks::{self, AttentionDims, CacheDims};
use finetp_core::backend::{AttentionParams, BackendError, KvIndex, PAD_SLOT, Tensor};
use rayon::prelude::*;

use super::flash;
use crate::storage::CpuBackend;

/// Multiply-adds below which attention stays on the calling thread.
const SERIAL_MACS: usize = 1 << 15;

/// The operands and shapes of one attention call.
struct Call<'a> {
    qs: &'a [f32],
    ks: &'a [f32],
    vs: &'a [f32],
    rows: Rows<'a>,
    scale: f32,
    window: Option<u32>,
    nh: usize,
    nkv: usize,
    dk: usize,
    dv: usize,
}

/// A step's rows and the block table they are found through.
#[derive(Clone, Copy)]
struct Rows<'a> {
    table: &'a [u32],
    slots: &'a [u32],
    positions: &'a [u32],
    dims: CacheDims,
}

impl Rows<'_> {
    /// The cache row (`block · block_size + offset`) holding position `p` of slot `slot`
    /// (both checked by [`check_rows`]).
    fn cache_row(&self, slot: u32, p: usize) -> usize {
        let bs = self.dims.block_size;
        self.table[slot as usize * self.dims.max_blocks + p / bs] as usize * bs + p % bs
    }
}

/// The tasks of a step: `(t0, t1, g)` for rows `t0..t1` of one sequence at consecutive
/// positions (at most [`flash::TILE_ROWS`]) and KV head `g`. Padding rows are in no task.
fn tasks(r: &Rows<'_>, nkv: usize) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    let n = r.slots.len();
    let mut t0 = 0;
    while t0 < n {
        if r.slots[t0] == PAD_SLOT {
            t0 += 1;
            continue;
        }
        let mut t1 = t0 + 1;
        while t1 < n && t1 - t0 < flash::TILE_ROWS && r.slots[t1] == r.slots[t0] && r.positions[t1] == r.positions[t1 - 1] + 1 {
            t1 += 1;
        }
        out.extend((0..nkv).map(|g| (t0, t1, g)));
        t0 = t1;
    }
    out
}

/// One task's output, `[(t1 - t0) · G, dv]` by row then head of the group.
fn run_task(d: &Call<'_>, (t0, t1, g): (usize, usize, usize)) -> Vec<f32> {
    let (nh, nkv, dk, dv) = (d.nh, d.nkv, d.dk, d.dv);
    let group = nh / nkv;
    let slot = d.rows.slots[t0];
    let first = |p: usize| d.window.map_or(0, |w| (p + 1).saturating_sub(w as usize));
    let mut q = Vec::with_capacity((t1 - t0) * group * dk);
    let mut spans = Vec::with_capacity((t1 - t0) * group);
    for t in t0..t1 {
        let p = d.rows.positions[t] as usize;
        for h in g * group..(g + 1) * group {
            q.extend(d.qs[(t * nh + h) * dk..][..dk].iter().map(|x| x * d.scale));
            spans.push((first(p), p));
        }
    }
    let (lo, hi) = (first(d.rows.positions[t0] as usize), d.rows.positions[t1 - 1] as usize);
    let task = flash::Task { q: &q, spans: &spans, dk, dv };
    let mut block = flash::Block::new(dk, dv);
    let mut state = flash::State::new(spans.len(), dv);
    let kv = |p: usize| {
        (lo..=hi).contains(&p).then(|| {
            let row = d.rows.cache_row(slot, p) * nkv + g;
            (&d.ks[row * dk..(row + 1) * dk], &d.vs[row * dv..(row + 1) * dv])
        })
    };
    let mut start = lo / flash::KEY_BLOCK * flash::KEY_BLOCK;
    while start <= hi {
        block.fill(start, dk, dv, kv);
        flash::attend(&task, start, &block, &mut state);
        start += flash::KEY_BLOCK;
    }
    let mut out = vec![0f32; spans.len() * dv];
    for (r, o) in out.chunks_exact_mut(dv.max(1)).enumerate() {
        state.finish(r, dv, o);
    }
    out
}

/// Every row's slot and position, and every block it reads (from the first key in its window
/// to its own position), must address the cache, or the row be padding (the counts are checked
/// by `checks`; the values only the host-side CPU backend can read at call time).
fn check_rows(op: &str, r: &Rows<'_>, window: Option<u32>) -> Result<(), BackendError> {
    let CacheDims { blocks, block_size, seqs, max_blocks, .. } = r.dims;
    for (i, (&slot, &p)) in r.slots.iter().zip(r.positions).enumerate().filter(|(_, (s, _))| **s != PAD_SLOT) {
        let (s, last) = (slot as usize, p as usize / block_size);
        if s >= seqs || last >= max_blocks {
            return Err(BackendError::Shape(format!(
                "{op}: row {i} addresses slot {slot} position {p}, outside a block table of {seqs} slots x {max_blocks} blocks of {block_size} rows"
            )));
        }
        let first = window.map_or(0, |w| (p as usize + 1).saturating_sub(w as usize)) / block_size;
        for b in first..=last {
            let block = r.table[s * max_blocks + b];
            if block as usize >= blocks {
                return Err(BackendError::Shape(format!(
                    "{op}: row {i} (slot {slot} position {p}) reads block {block} (entry {b} of its table row) of a cache of {blocks} blocks"
                )));
            }
        }
    }
    Ok(())
}

/// The step's rows, read from the index's host-side buffers.
/// Writes check only each row's own block (`window = Some(1)`); attention every block it reads.
fn rows<'a>(op: &'static str, index: &'a KvIndex<'a, CpuBackend>, dims: CacheDims, window: Option<u32>) -> Result<Rows<'a>, BackendError> {
    let r = Rows {
        table: index.block_table.buffer().as_u32(op)?,
        slots: index.slots.buffer().as_u32(op)?,
        positions: index.positions.buffer().as_u32(op)?,
        dims,
    };
    check_rows(op, &r, window)?;
    Ok(r)
}

pub(super) fn kv_cache_write(x: &Tensor<CpuBackend>, cache: &mut Tensor<CpuBackend>, index: &KvIndex<'_, CpuBackend>) -> Result<(), BackendError> {
    let dims = checks::kv_cache_write(x, cache, index)?;
    let r = rows("kv_cache_write", index, dims, Some(1))?;
    let xs = x.buffer().as_f32("kv_cache_write (x)")?;
    let cs = cache.buffer_mut().as_f32_mut("kv_cache_write (cache)")?;
    let row = dims.heads * dims.dim;
    for (i, (&slot, &p)) in r.slots.iter().zip(r.positions).enumerate().filter(|(_, (s, _))| **s != PAD_SLOT) {
        let at = r.cache_row(slot, p as usize) * row;
        cs[at..at + row].copy_from_slice(&xs[i * row..(i + 1) * row]);
    }
    Ok(())
}

pub(super) fn kv_cache_attention(
    be: &CpuBackend,
    (q, k, v): (&Tensor<CpuBackend>, &Tensor<CpuBackend>, &Tensor<CpuBackend>),
    index: &KvIndex<'_, CpuBackend>,
    params: &AttentionParams,
    y: &mut Tensor<CpuBackend>,
) -> Result<(), BackendError> {
    let AttentionDims { heads: nh, kv_heads: nkv, dk, dv, cache, .. } = checks::kv_cache_attention(q, k, v, index, y)?;
    let window = params.sliding_window.filter(|&w| w > 0);
    let r = rows("kv_cache_attention", index, cache, window)?;
    let (qs, ks, vs) = (q.buffer().as_f32("kv_cache_attention (q)")?, k.buffer().as_f32("kv_cache_attention (k)")?, v.buffer().as_f32("kv_cache_attention (v)")?);
    let ys = y.buffer_mut().as_f32_mut("kv_cache_attention (y)")?;
    if ys.is_empty() {
        return Ok(());
    }
    let d = Call { qs, ks, vs, rows: r, scale: params.scale, window, nh, nkv, dk, dv };
    let span = |p: u32| window.map_or(p as usize + 1, |w| (p as usize + 1).min(w as usize));
    let keys: usize = r.slots.iter().zip(r.positions).filter(|(s, _)| **s != PAD_SLOT).map(|(_, p)| span(*p)).sum();
    let macs = nh * keys * (dk + dv);
    let pool = (macs > SERIAL_MACS && be.threads() > 1).then(|| be.pool());
    attend_step(&d, pool, ys);
    Ok(())
}

/// Every task of the step, on `pool` (or the calling thread), scattered into `ys
/// [rows, nh, dv]`; padding rows are zero.
fn attend_step(d: &Call<'_>, pool: Option<&rayon::ThreadPool>, ys: &mut [f32]) {
    let work = tasks(&d.rows, d.nkv);
    let outs: Vec<Vec<f32>> = match pool {
        None => work.iter().map(|&t| run_task(d, t)).collect(),
        Some(pool) => pool.install(|| work.par_iter().map(|&t| run_task(d, t)).collect()),
    };
    // Every row but padding is in exactly one task per KV head.
    ys.fill(0.0);
    let (nh, dv, group) = (d.nh, d.dv, d.nh / d.nkv);
    for (&(t0, t1, g), out) in work.iter().zip(&outs) {
        for (i, o) in out.chunks_exact(dv.max(1)).enumerate() {
            let (t, h) = (t0 + i / group, g * group + i % group);
            debug_assert!(t < t1);
            ys[(t * nh + h) * dv..][..dv].copy_from_slice(o);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache of 2 sequence slots whose blocks are interleaved (slot 0 holds blocks 0, 2, 4 …),
    /// random keys and values for every position, and queries for `rows`.
    struct Case {
        qs: Vec<f32>,
        ks: Vec<f32>,
        vs: Vec<f32>,
        table: Vec<u32>,
        dims: CacheDims,
    }

    const BS: usize = 16;

    fn case(nh: usize, nkv: usize, dk: usize, dv: usize, max_len: usize, rows: usize, seed: u64) -> Case {
        let max_blocks = max_len.div_ceil(BS);
        let blocks = 2 * max_blocks;
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        };
        let table = (0..2).flat_map(|s| (0..max_blocks).map(move |b| (2 * b + s) as u32)).collect();
        let n = blocks * BS * nkv;
        Case {
            qs: (0..rows * nh * dk).map(|_| 2.0 * next()).collect(),
            ks: (0..n * dk).map(|_| next()).collect(),
            vs: (0..n * dv).map(|_| next()).collect(),
            table,
            dims: CacheDims { blocks, block_size: BS, heads: nkv, dim: dk, seqs: 2, max_blocks },
        }
    }

    /// The step's attention as `kv_cache_attention` computes it, on the calling thread.
    fn attention(c: &Case, slots: &[u32], positions: &[u32], nh: usize, nkv: usize, (dk, dv): (usize, usize), window: Option<u32>) -> Vec<f32> {
        let rows = Rows { table: &c.table, slots, positions, dims: c.dims };
        let d = Call { qs: &c.qs[..slots.len() * nh * dk], ks: &c.ks, vs: &c.vs, rows, scale: 0.3, window, nh, nkv, dk, dv };
        let mut y = vec![0f32; slots.len() * nh * dv];
        attend_step(&d, None, &mut y);
        y
    }

    /// Softmax attention in f64, position by position.
    fn naive(c: &Case, slots: &[u32], positions: &[u32], nh: usize, nkv: usize, (dk, dv): (usize, usize), window: Option<u32>) -> Vec<f64> {
        let rows = Rows { table: &c.table, slots, positions, dims: c.dims };
        let mut y = vec![0f64; slots.len() * nh * dv];
        for (t, (&slot, &p)) in slots.iter().zip(positions).enumerate().filter(|(_, (s, _))| **s != PAD_SLOT) {
            let p = p as usize;
            let first = window.map_or(0, |w| (p + 1).saturating_sub(w as usize));
            for h in 0..nh {
                let g = h / (nh / nkv);
                let q = &c.qs[(t * nh + h) * dk..][..dk];
                let key = |j: usize| rows.cache_row(slot, j) * nkv + g;
                let s: Vec<f64> = (first..=p).map(|j| 0.3 * q.iter().zip(&c.ks[key(j) * dk..][..dk]).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum::<f64>()).collect();
                let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
                let sum: f64 = e.iter().sum();
                for (j, w) in (first..=p).zip(&e) {
                    for d in 0..dv {
                        y[(t * nh + h) * dv + d] += w / sum * f64::from(c.vs[key(j) * dv + d]);
                    }
                }
            }
        }
        y
    }

    #[test]
    fn tiled_attention_equals_softmax_attention_and_decode_equals_prefill_bit_for_bit() {
        // GQA 6/2 with head dims off the SIMD width; MLA-like dk != dv; a window shorter and
        // one longer than a key block; prompts longer than several tiles and key blocks.
        for (nh, nkv, dk, dv, window) in [(6, 2, 20, 20, None), (4, 4, 64, 48, Some(5)), (3, 1, 16, 33, Some(100)), (2, 1, 8, 8, None)] {
            let (len0, len1) = (150, 37);
            let c = case(nh, nkv, dk, dv, 160, len0 + len1 + 1, nh as u64 * 31 + dk as u64);
            // One prefill step: sequence 0's 150 rows, a padding row, sequence 1's 37 rows.
            let slots: Vec<u32> = std::iter::repeat_n(0, len0).chain([PAD_SLOT]).chain(std::iter::repeat_n(1, len1)).collect();
            let positions: Vec<u32> = (0..len0 as u32).chain([0]).chain(0..len1 as u32).collect();
            let dims = (dk, dv);
            let got = attention(&c, &slots, &positions, nh, nkv, dims, window);
            let want = naive(&c, &slots, &positions, nh, nkv, dims, window);
            let worst = got.iter().zip(&want).map(|(g, w)| (f64::from(*g) - w).abs()).fold(0f64, f64::max);
            assert!(worst < 2e-6, "({nh}, {nkv}, {dk}, {dv}, {window:?}): worst difference {worst}");
            assert!(got[len0 * nh * dv..(len0 + 1) * nh * dv].iter().all(|&v| v == 0.0), "the padding row stays zero");
            // Each row again as a decode step of its own, and the prompt in chunks of 7: the
            // same bits.
            let row = nh * dv;
            for t in [0, 1, 15, 16, 17, 63, 64, 65, 149] {
                let q0 = t * nh * dk;
                let one = Case { qs: c.qs[q0..q0 + nh * dk].to_vec(), ks: c.ks.clone(), vs: c.vs.clone(), table: c.table.clone(), dims: c.dims };
                let y = attention(&one, &[0], &[t as u32], nh, nkv, dims, window);
                assert_eq!(y, got[t * row..(t + 1) * row], "row {t} decoded alone differs from its prefill");
            }
            for start in (0..len0).step_by(7) {
                let end = (start + 7).min(len0);
                let chunk = Case { qs: c.qs[start * nh * dk..end * nh * dk].to_vec(), ks: c.ks.clone(), vs: c.vs.clone(), table: c.table.clone(), dims: c.dims };
                let y = attention(&chunk, &vec![0; end - start], &(start as u32..end as u32).collect::<Vec<_>>(), nh, nkv, dims, window);
                assert_eq!(y, got[start * row..end * row], "chunk {start}..{end} differs from the whole prefill");
            }
        }
    }

    #[test]
    fn a_nan_surfaces_in_its_own_row_and_a_later_infinite_value_reaches_no_earlier_row() {
        let (nh, nkv, dk, dv) = (2, 1, 8, 8);
        let mut c = case(nh, nkv, dk, dv, 32, 4, 3);
        let dims = (dk, dv);
        // Row 2's query is NaN; position 3's value row is infinite.
        c.qs[2 * nh * dk] = f32::NAN;
        let row = |p: usize| Rows { table: &c.table, slots: &[0], positions: &[0], dims: c.dims }.cache_row(0, p) * nkv;
        let v3 = row(3);
        c.vs[v3 * dv..(v3 + 1) * dv].fill(f32::INFINITY);
        let y = attention(&c, &[0; 4], &[0, 1, 2, 3], nh, nkv, dims, None);
        let out = |t: usize, h: usize| &y[(t * nh + h) * dv..][..dv];
        assert!(out(0, 0).iter().chain(out(1, 1)).all(|v| v.is_finite()), "rows before position 3 never see its value");
        assert!(out(2, 0).iter().all(|v| v.is_nan()), "the NaN query's row is NaN");
        assert!(out(2, 1).iter().all(|v| v.is_finite()), "the other head of that row is not");
    }
}
