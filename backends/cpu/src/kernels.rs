//! Decoder kernels for the CPU backend. Plain loops, parallel over rows or heads where the work
//! is large enough to matter (attention, norms of long prefills).

use finetp_core::backend::{BackendError, DType, Kernels, RopeStyle, Tensor};
use rayon::prelude::*;

use crate::storage::{CpuBackend, CpuStorage};

/// Any float storage widened to an f32 vector (weights of norms and embedding rows).
fn floats(s: &CpuStorage, op: &'static str, range: std::ops::Range<usize>) -> Result<Vec<f32>, BackendError> {
    Ok(match s {
        CpuStorage::F32(v) => v[range].to_vec(),
        CpuStorage::BF16(v) => v[range].iter().map(|x| x.to_f32()).collect(),
        CpuStorage::F16(v) => v[range].iter().map(|x| x.to_f32()).collect(),
        CpuStorage::U32(_) => return Err(BackendError::DType { op, expected: "a float dtype", got: DType::U32 }),
    })
}

fn same_shape(op: &str, a: &[usize], b: &[usize]) -> Result<(), BackendError> {
    if a != b {
        return Err(BackendError::Shape(format!("{op}: shapes {a:?} and {b:?} differ")));
    }
    Ok(())
}

impl Kernels for CpuBackend {
    fn embedding(&self, ids: &Tensor<Self>, table: &Tensor<Self>, row_start: usize, y: &mut Tensor<Self>) -> Result<(), BackendError> {
        let ids = ids.buffer().as_u32("embedding (ids)")?;
        let (rows, h) = (table.rows(), table.row_len());
        if y.shape() != [ids.len(), h] {
            return Err(BackendError::Shape(format!("embedding: {} ids of width {h} into {:?}", ids.len(), y.shape())));
        }
        let tab = table.buffer();
        let out = y.buffer_mut().as_f32_mut("embedding (y)")?;
        for (t, &id) in ids.iter().enumerate() {
            let dst = &mut out[t * h..(t + 1) * h];
            match (id as usize).checked_sub(row_start).filter(|&r| r < rows) {
                Some(r) => dst.copy_from_slice(&floats(tab, "embedding (table)", r * h..(r + 1) * h)?),
                None => dst.fill(0.0),
            }
        }
        Ok(())
    }

    fn rms_norm(&self, x: &Tensor<Self>, w: &Tensor<Self>, eps: f32, y: &mut Tensor<Self>) -> Result<(), BackendError> {
        let h = w.numel();
        same_shape("rms_norm", x.shape(), y.shape())?;
        if h == 0 || !x.numel().is_multiple_of(h) {
            return Err(BackendError::Shape(format!("rms_norm: weight of {h} does not tile {:?}", x.shape())));
        }
        let wv = floats(w.buffer(), "rms_norm (w)", 0..h)?;
        let xs = x.buffer().as_f32("rms_norm (x)")?;
        let ys = y.buffer_mut().as_f32_mut("rms_norm (y)")?;
        let norm = |(xr, yr): (&[f32], &mut [f32])| {
            let ms = xr.iter().map(|v| f64::from(*v) * f64::from(*v)).sum::<f64>() / h as f64;
            let inv = (1.0 / (ms + f64::from(eps)).sqrt()) as f32;
            for ((o, v), g) in yr.iter_mut().zip(xr).zip(&wv) {
                *o = v * inv * g;
            }
        };
        if xs.len() >= 1 << 16 {
            self.pool().install(|| xs.par_chunks(h).zip(ys.par_chunks_mut(h)).for_each(norm));
        } else {
            xs.chunks(h).zip(ys.chunks_mut(h)).for_each(norm);
        }
        Ok(())
    }

    fn rope(&self, x: &mut Tensor<Self>, positions: &[u32], inv_freq: &[f32], style: RopeStyle) -> Result<(), BackendError> {
        let (t, nh, d) = match x.shape() {
            [a, b, c] => (*a, *b, *c),
            s => return Err(BackendError::Shape(format!("rope: x must be [T, heads, head_dim], got {s:?}"))),
        };
        let half = inv_freq.len();
        if positions.len() != t || 2 * half > d {
            return Err(BackendError::Shape(format!("rope: {} positions for {t} rows, rotary dim {} for head_dim {d}", positions.len(), 2 * half)));
        }
        let xs = x.buffer_mut().as_f32_mut("rope (x)")?;
        for (row, &p) in positions.iter().enumerate() {
            let (sin, cos): (Vec<f32>, Vec<f32>) = inv_freq.iter().map(|f| (p as f32 * f).sin_cos()).unzip();
            for h in 0..nh {
                let v = &mut xs[(row * nh + h) * d..(row * nh + h + 1) * d];
                for i in 0..half {
                    let (a, b) = match style {
                        RopeStyle::Neox => (i, i + half),
                        RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                    };
                    let (x0, x1) = (v[a], v[b]);
                    v[a] = x0 * cos[i] - x1 * sin[i];
                    v[b] = x0 * sin[i] + x1 * cos[i];
                }
            }
        }
        Ok(())
    }

    fn silu_mul(&self, gate_up: &Tensor<Self>, y: &mut Tensor<Self>) -> Result<(), BackendError> {
        let (t, i) = (y.rows(), y.row_len());
        if gate_up.shape() != [t, 2 * i] {
            return Err(BackendError::Shape(format!("silu_mul: gate_up {:?} for output {:?}", gate_up.shape(), y.shape())));
        }
        let g = gate_up.buffer().as_f32("silu_mul (gate_up)")?;
        let out = y.buffer_mut().as_f32_mut("silu_mul (y)")?;
        for r in 0..t {
            let (gate, up) = g[r * 2 * i..(r + 1) * 2 * i].split_at(i);
            for ((o, a), b) in out[r * i..(r + 1) * i].iter_mut().zip(gate).zip(up) {
                *o = a / (1.0 + (-a).exp()) * b;
            }
        }
        Ok(())
    }

    fn add_assign(&self, a: &mut Tensor<Self>, b: &Tensor<Self>) -> Result<(), BackendError> {
        same_shape("add_assign", a.shape(), b.shape())?;
        let bs = b.buffer().as_f32("add_assign (b)")?;
        for (x, y) in a.buffer_mut().as_f32_mut("add_assign (a)")?.iter_mut().zip(bs) {
            *x += y;
        }
        Ok(())
    }

    fn scale(&self, a: &mut Tensor<Self>, s: f32) -> Result<(), BackendError> {
        a.buffer_mut().as_f32_mut("scale")?.iter_mut().for_each(|x| *x *= s);
        Ok(())
    }

    fn attention(&self, q: &Tensor<Self>, k: &Tensor<Self>, v: &Tensor<Self>, past: usize, scale: f32, y: &mut Tensor<Self>) -> Result<(), BackendError> {
        let bad = || BackendError::Shape(format!("attention: q {:?}, k {:?}, v {:?}, y {:?}, past {past}", q.shape(), k.shape(), v.shape(), y.shape()));
        let ([t, nh, dk], [s, nkv, dk2], [s2, nkv2, dv]) = (q.shape(), k.shape(), v.shape()) else { return Err(bad()) };
        let (t, nh, dk, s, nkv, dv) = (*t, *nh, *dk, *s, *nkv, *dv);
        if dk != *dk2 || s != *s2 || nkv != *nkv2 || nkv == 0 || nh % nkv != 0 || s < past + t || y.shape() != [t, nh, dv] {
            return Err(bad());
        }
        let (qs, ks, vs) = (q.buffer().as_f32("attention (q)")?, k.buffer().as_f32("attention (k)")?, v.buffer().as_f32("attention (v)")?);
        let group = nh / nkv;
        // One task per head: [t, dv] outputs, scattered into y afterwards.
        let heads: Vec<Vec<f32>> = self.pool().install(|| {
            (0..nh)
                .into_par_iter()
                .map(|h| {
                    let kh = h / group;
                    let mut out = vec![0f32; t * dv];
                    let mut scores = vec![0f32; past + t];
                    for i in 0..t {
                        let qv = &qs[(i * nh + h) * dk..(i * nh + h + 1) * dk];
                        let n = past + i + 1;
                        let mut max = f32::NEG_INFINITY;
                        for (j, sc) in scores[..n].iter_mut().enumerate() {
                            let kv = &ks[(j * nkv + kh) * dk..(j * nkv + kh + 1) * dk];
                            *sc = qv.iter().zip(kv).map(|(a, b)| a * b).sum::<f32>() * scale;
                            max = max.max(*sc);
                        }
                        let mut sum = 0f32;
                        for sc in &mut scores[..n] {
                            *sc = (*sc - max).exp();
                            sum += *sc;
                        }
                        let o = &mut out[i * dv..(i + 1) * dv];
                        for (j, sc) in scores[..n].iter().enumerate() {
                            let w = sc / sum;
                            for (ov, vv) in o.iter_mut().zip(&vs[(j * nkv + kh) * dv..(j * nkv + kh + 1) * dv]) {
                                *ov += w * vv;
                            }
                        }
                    }
                    out
                })
                .collect()
        });
        let ys = y.buffer_mut().as_f32_mut("attention (y)")?;
        for (h, out) in heads.iter().enumerate() {
            for i in 0..t {
                ys[(i * nh + h) * dv..(i * nh + h + 1) * dv].copy_from_slice(&out[i * dv..(i + 1) * dv]);
            }
        }
        Ok(())
    }

    fn argmax(&self, logits: &Tensor<Self>) -> Result<Vec<u32>, BackendError> {
        let v = logits.row_len();
        let l = logits.buffer().as_f32("argmax")?;
        if v == 0 {
            return Err(BackendError::Shape("argmax over empty rows".into()));
        }
        Ok(l.chunks(v)
            .map(|r| r.iter().enumerate().fold((0usize, f32::NEG_INFINITY), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0 as u32)
            .collect())
    }

    fn top_k(&self, logits: &Tensor<Self>, k: usize) -> Result<Vec<Vec<(f32, u32)>>, BackendError> {
        let v = logits.row_len();
        let l = logits.buffer().as_f32("top_k")?;
        if v == 0 {
            return Ok(vec![]);
        }
        Ok(l.chunks(v)
            .map(|r| {
                let mut idx: Vec<(f32, u32)> = r.iter().enumerate().map(|(i, &x)| (x, i as u32)).collect();
                idx.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                idx.truncate(k);
                idx
            })
            .collect())
    }
}
