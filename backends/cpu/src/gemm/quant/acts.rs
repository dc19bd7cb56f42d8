//! Activations quantised per block of 32, as the block-format dot products read them.

use finetp_core::backend::DType;

/// `x [m, k]` as int8 blocks: per row and block, 32 values `q`, a scale `d` (`x ≈ d · q`) and,
/// for `Q4_1` weights, `s = d · Σq` (the minimum's term needs the block's sum).
pub(crate) struct QActs {
    pub(crate) m: usize,
    nb: usize,
    q: Vec<i8>,
    d: Vec<f32>,
    s: Vec<f32>,
}

/// One row of [`QActs`].
#[derive(Clone, Copy)]
pub(crate) struct ActRow<'a> {
    pub(crate) q: &'a [i8],
    pub(crate) d: &'a [f32],
    pub(crate) s: &'a [f32],
}

impl ActRow<'_> {
    pub(crate) fn blocks(&self) -> usize {
        self.d.len()
    }
}

impl QActs {
    /// Quantises `x`; `k` must be a multiple of 32 (the weights' rows are whole blocks).
    pub(crate) fn new(x: &[f32], m: usize, k: usize, weights: DType) -> Self {
        assert!(k.is_multiple_of(32) && x.len() == m * k, "QActs: [{m}, {k}] from {} values", x.len());
        let nb = k / 32;
        let mut q = vec![0i8; m * k];
        let mut d = vec![0f32; m * nb];
        let mut s = if weights == DType::Q4_1 { vec![0f32; m * nb] } else { Vec::new() };
        for (b, (xb, qb)) in x.chunks_exact(32).zip(q.chunks_exact_mut(32)).enumerate() {
            let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
            let db = amax / 127.0;
            let id = if db > 0.0 { 1.0 / db } else { 0.0 };
            let mut sum = 0i32;
            for (o, v) in qb.iter_mut().zip(xb) {
                // |v · id| <= 127 up to rounding; the clamp keeps a rounding-up at the edge in range.
                let r = (v * id).round().clamp(-127.0, 127.0) as i8;
                sum += i32::from(r);
                *o = r;
            }
            d[b] = db;
            if !s.is_empty() {
                s[b] = db * sum as f32;
            }
        }
        QActs { m, nb, q, d, s }
    }

    pub(crate) fn row(&self, i: usize) -> ActRow<'_> {
        let nb = self.nb;
        ActRow {
            q: &self.q[i * nb * 32..(i + 1) * nb * 32],
            d: &self.d[i * nb..(i + 1) * nb],
            s: if self.s.is_empty() { &[] } else { &self.s[i * nb..(i + 1) * nb] },
        }
    }
}
