//! The paged KV cache on the CPU: storing new rows, and causal GQA attention of every query row
//! over its own sequence's cached keys (through the block table; see
//! [`KvIndex`](finetp_core::backend::KvIndex)).
//!
//! One task per (query row, head): each owns its `dv` outputs in `y` (contiguous, so the pool
//! writes `y` directly), which parallelises decode (one row per sequence, many heads) and
//! prefill alike. The softmax subtracts the row maximum before `exp`, so large scores cannot
//! overflow.

use finetp_core::backend::checks::{self, AttentionDims, CacheDims};
use finetp_core::backend::{AttentionParams, BackendError, KvIndex, PAD_SLOT, Tensor};
use rayon::prelude::*;

use crate::storage::CpuBackend;

/// Multiply-adds below which attention stays on the calling thread.
const SERIAL_MACS: usize = 1 << 15;

/// `Σ a[i]·b[i]` with 8 independent partial sums, so it vectorises.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

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

/// Output row `idx = t·nh + h` into `out [dv]`; `scores` is scratch.
fn one(d: &Call<'_>, idx: usize, out: &mut [f32], scores: &mut Vec<f32>) {
    let (t, h) = (idx / d.nh, idx % d.nh);
    let slot = d.rows.slots[t];
    if slot == PAD_SLOT {
        out.fill(0.0);
        return;
    }
    let kh = h / (d.nh / d.nkv);
    let pos = d.rows.positions[t] as usize;
    let first = d.window.map_or(0, |w| (pos + 1).saturating_sub(w as usize));
    let key = |j: usize| d.rows.cache_row(slot, j) * d.nkv + kh;
    let q = &d.qs[idx * d.dk..(idx + 1) * d.dk];
    scores.clear();
    scores.extend((first..=pos).map(|j| dot(q, &d.ks[key(j) * d.dk..][..d.dk]) * d.scale));
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    out.fill(0.0);
    for (j, p) in (first..=pos).zip(scores.iter()) {
        for (o, v) in out.iter_mut().zip(&d.vs[key(j) * d.dv..][..d.dv]) {
            *o += p * v;
        }
    }
    let inv = 1.0 / sum;
    out.iter_mut().for_each(|o| *o *= inv);
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
    if macs <= SERIAL_MACS || be.threads() == 1 {
        let mut scores = Vec::new();
        for (idx, out) in ys.chunks_exact_mut(dv).enumerate() {
            one(&d, idx, out, &mut scores);
        }
    } else {
        be.pool().install(|| {
            ys.par_chunks_exact_mut(dv).enumerate().for_each_init(Vec::new, |scores, (idx, out)| one(&d, idx, out, scores));
        });
    }
    Ok(())
}
