//! Tiled causal attention with an online softmax (FlashAttention's scheme, on the CPU).
//!
//! A *task* is one KV head and a tile of up to [`TILE_ROWS`] consecutive rows of one sequence:
//! its `G = heads / kv_heads` query heads share that KV head, so every key block gathered from
//! the cache serves `G × rows` query vectors (a prefill of `L` tokens reads each key about
//! `L / TILE_ROWS` times instead of `L × G` times). Keys are visited in blocks of
//! [`KEY_BLOCK`] positions aligned to position 0; each query row keeps a running maximum `m`,
//! sum `l` and output `o`, rescaled by `exp(m_old − m_new)` when a block raises the maximum, so
//! no row ever holds more than one block of scores, whatever the prompt length.
//!
//! Every output row is computed the same way whatever tile, task or step it is in: its blocks
//! are the aligned blocks its window touches, in order, each with the same masked lanes, and
//! every sum runs in a fixed order. A block outside a row's window is skipped for that row. So
//! a decode step (one row) gives bit for bit what a prefill gives at the same position, and a
//! chunked prefill what a whole one does.

/// Query rows of one sequence per task.
pub(super) const TILE_ROWS: usize = 16;
/// Key positions per block: the width of a row of scores.
pub(super) const KEY_BLOCK: usize = 64;
/// The SIMD width the inner loops are written in (one AVX-512 register, two AVX2 ones).
const LANES: usize = 16;

/// One task's inputs: `q [rows·G, dk]` (row-major by row then head, already scaled), the key
/// range every row may see, and the per-row windows.
pub(super) struct Task<'a> {
    pub q: &'a [f32],
    /// `(first, last)` visible key position of each query row (inclusive), one per row of `q`.
    pub spans: &'a [(usize, usize)],
    pub dk: usize,
    pub dv: usize,
}

/// One block of [`KEY_BLOCK`] positions gathered from the cache: keys transposed,
/// `kt [dk, KEY_BLOCK]`, and values `v [KEY_BLOCK, dv]`; what [`attend`] multiplies.
pub(super) struct Block {
    pub kt: Vec<f32>,
    pub v: Vec<f32>,
}

impl Block {
    pub fn new(dk: usize, dv: usize) -> Self {
        Self { kt: vec![0.0; dk * KEY_BLOCK], v: vec![0.0; KEY_BLOCK * dv] }
    }

    /// Fills the block with positions `start .. start + KEY_BLOCK`: `kv(p)` gives position
    /// `p`'s key and value rows, or `None` past the last position any row sees.
    pub fn fill<'k>(&mut self, start: usize, dk: usize, dv: usize, kv: impl Fn(usize) -> Option<(&'k [f32], &'k [f32])>) {
        for j in 0..KEY_BLOCK {
            match kv(start + j) {
                Some((k, v)) => {
                    for (d, &x) in k[..dk].iter().enumerate() {
                        self.kt[d * KEY_BLOCK + j] = x;
                    }
                    self.v[j * dv..(j + 1) * dv].copy_from_slice(&v[..dv]);
                }
                None => {
                    for d in 0..dk {
                        self.kt[d * KEY_BLOCK + j] = 0.0;
                    }
                    self.v[j * dv..(j + 1) * dv].fill(0.0);
                }
            }
        }
    }
}

/// The running softmax state of every query row of a task.
pub(super) struct State {
    m: Vec<f32>,
    l: Vec<f32>,
    o: Vec<f32>,
}

impl State {
    pub fn new(rows: usize, dv: usize) -> Self {
        Self { m: vec![f32::NEG_INFINITY; rows], l: vec![0.0; rows], o: vec![0.0; rows * dv] }
    }

    /// Row `r`'s output: `o / l` (zero for a row that saw no key, which never happens for a
    /// causal row: it sees itself).
    pub fn finish(&self, r: usize, dv: usize, out: &mut [f32]) {
        let inv = if self.l[r] > 0.0 { 1.0 / self.l[r] } else { 0.0 };
        for (y, o) in out.iter_mut().zip(&self.o[r * dv..(r + 1) * dv]) {
            *y = o * inv;
        }
    }
}

/// Adds key block `start ..` (gathered in `b`) to every row of `t` whose window it touches.
pub(super) fn attend(t: &Task<'_>, start: usize, b: &Block, st: &mut State) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") {
            // SAFETY: the feature was detected just above.
            return unsafe { attend_avx512(t, start, b, st) };
        }
        if has!("avx2") && has!("fma") {
            // SAFETY: the features were detected just above.
            return unsafe { attend_avx2(t, start, b, st) };
        }
    }
    attend_rows(t, start, b, st);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn attend_avx512(t: &Task<'_>, start: usize, b: &Block, st: &mut State) {
    attend_rows(t, start, b, st);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_avx2(t: &Task<'_>, start: usize, b: &Block, st: &mut State) {
    attend_rows(t, start, b, st);
}

/// The kernel, written in fixed-width loops the compiler vectorises for whichever features the
/// caller enabled. Every lane operation is element-wise and every sum runs in the same order
/// on every path, so the paths agree bit for bit with each other. Each product keeps eight
/// independent accumulator chains (scores: even and odd `k` for four vectors of keys; outputs:
/// even and odd keys for four vectors of `dv`), enough to hide the FMA latency, and adds the
/// two halves at the end — a fixed order, the same for every row.
#[inline(always)]
fn attend_rows(t: &Task<'_>, start: usize, b: &Block, st: &mut State) {
    let (dk, dv) = (t.dk, t.dv);
    for (r, &(first, last)) in t.spans.iter().enumerate() {
        if last < start || first >= start + KEY_BLOCK {
            continue;
        }
        let q = &t.q[r * dk..(r + 1) * dk];
        let mut s = scores(q, &b.kt);
        // Mask positions outside the row's window.
        let (lo, hi) = (first.saturating_sub(start), (last + 1 - start).min(KEY_BLOCK));
        // The maximum lane by lane, then over the lanes (a plain compare, which vectorises; no
        // score is NaN for finite inputs).
        let mut lanes = [f32::NEG_INFINITY; LANES];
        for (c, sc) in s.chunks_exact_mut(LANES).enumerate() {
            for l in 0..LANES {
                let j = c * LANES + l;
                if j < lo || j >= hi {
                    sc[l] = f32::NEG_INFINITY;
                }
                lanes[l] = if sc[l] > lanes[l] { sc[l] } else { lanes[l] };
            }
        }
        let bmax = lanes.iter().fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
        let m_new = st.m[r].max(bmax);
        let alpha = exp(st.m[r] - m_new);
        st.m[r] = m_new;
        let mut sum = [0f32; LANES];
        for sc in s.chunks_exact_mut(LANES) {
            for l in 0..LANES {
                let p = if sc[l] == f32::NEG_INFINITY { 0.0 } else { exp(sc[l] - m_new) };
                sc[l] = p;
                sum[l] += p;
            }
        }
        st.l[r] = st.l[r] * alpha + sum.iter().sum::<f32>();
        accumulate(&mut st.o[r * dv..(r + 1) * dv], alpha, &s, &b.v, dv);
    }
}

/// `s[j] = Σ_k q[k] · kt[k][j]` over the block's keys: even `k` and odd `k` summed apart, then
/// added.
#[inline(always)]
fn scores(q: &[f32], kt: &[f32]) -> [f32; KEY_BLOCK] {
    let (mut even, mut odd) = ([0f32; KEY_BLOCK], [0f32; KEY_BLOCK]);
    let mut pairs = q.chunks_exact(2);
    for (k2, qq) in (&mut pairs).enumerate() {
        let (r0, r1) = (&kt[2 * k2 * KEY_BLOCK..][..KEY_BLOCK], &kt[(2 * k2 + 1) * KEY_BLOCK..][..KEY_BLOCK]);
        for j in 0..KEY_BLOCK {
            even[j] = qq[0].mul_add(r0[j], even[j]);
            odd[j] = qq[1].mul_add(r1[j], odd[j]);
        }
    }
    if let [qk] = pairs.remainder() {
        let r0 = &kt[(q.len() - 1) * KEY_BLOCK..][..KEY_BLOCK];
        for j in 0..KEY_BLOCK {
            even[j] = qk.mul_add(r0[j], even[j]);
        }
    }
    for j in 0..KEY_BLOCK {
        even[j] += odd[j];
    }
    even
}

/// Width of the output slices [`accumulate`] keeps in registers.
const OUT_CHUNK: usize = 4 * LANES;

/// `o = o · alpha + Σ_j p[j] · v[j]`: even and odd keys summed apart, then added, for each
/// slice of `o` (64 wide, then 16, then single lanes).
#[inline(always)]
fn accumulate(o: &mut [f32], alpha: f32, p: &[f32; KEY_BLOCK], v: &[f32], dv: usize) {
    let mut d0 = 0;
    while d0 < dv {
        let w = if dv - d0 >= OUT_CHUNK { OUT_CHUNK } else if dv - d0 >= LANES { LANES } else { 1 };
        match w {
            OUT_CHUNK => accumulate_slice::<OUT_CHUNK>(&mut o[d0..d0 + w], alpha, p, v, dv, d0),
            LANES => accumulate_slice::<LANES>(&mut o[d0..d0 + w], alpha, p, v, dv, d0),
            _ => accumulate_slice::<1>(&mut o[d0..d0 + w], alpha, p, v, dv, d0),
        }
        d0 += w;
    }
}

#[inline(always)]
fn accumulate_slice<const W: usize>(o: &mut [f32], alpha: f32, p: &[f32; KEY_BLOCK], v: &[f32], dv: usize, d0: usize) {
    let (mut even, mut odd) = ([0f32; W], [0f32; W]);
    for l in 0..W {
        even[l] = o[l] * alpha;
    }
    for j2 in 0..KEY_BLOCK / 2 {
        let (j0, j1) = (2 * j2, 2 * j2 + 1);
        let (v0, v1) = (&v[j0 * dv + d0..][..W], &v[j1 * dv + d0..][..W]);
        // A masked key (p = 0) is skipped, not multiplied: its V row may be a later position's
        // (or one outside the window), and 0 · inf would be NaN. For finite V the bits are the
        // same either way.
        if p[j0] != 0.0 {
            for l in 0..W {
                even[l] = p[j0].mul_add(v0[l], even[l]);
            }
        }
        if p[j1] != 0.0 {
            for l in 0..W {
                odd[l] = p[j1].mul_add(v1[l], odd[l]);
            }
        }
    }
    for l in 0..W {
        o[l] = even[l] + odd[l];
    }
}

/// `e^x` for `x ≤ 0` (scores minus their maximum; `-∞` gives 0), to about 2 ulp: `2^n · e^r`
/// with `n = round(x·log2 e)` and a degree-6 polynomial for `e^r` on `|r| ≤ ln2/2` (Cody–Waite
/// reduction). Branch-free, so it vectorises.
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Below this e^x is under f32's smallest normal: 0.
    let under = x < -87.0;
    // Clamped below, but a NaN stays NaN (and so does the result): a NaN score must surface.
    let x = if x < -87.0 { -87.0 } else { x };
    // Round to nearest by the 1.5·2^23 trick.
    let n = (x * LOG2E + 12_582_912.0) - 12_582_912.0;
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let mut p = 1.987_569_1e-4f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 0.5);
    let e = (p * r).mul_add(r, r) + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if under { 0.0 } else { e * scale }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_2_ulp_of_std_and_zero_far_below() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -87.0 * i as f32 / 200_000.0;
            let (got, want) = (exp(x) as f64, f64::from(x).exp());
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 2.5e-7, "worst relative error {worst}");
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(0.0), 1.0);
    }
}
