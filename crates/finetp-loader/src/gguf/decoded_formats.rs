//! The GGUF block formats finetp reads by decoding them to f32 at load (no backend multiplies
//! by them as stored yet): `Q5_0` and `Q5_1` (blocks of 32, a fifth bit per element in a
//! 32-bit mask) and the k-quants `Q4_K`, `Q5_K` and `Q6_K` (super-blocks of 256 in sub-blocks
//! with their own 6- or 8-bit scales), as llama.cpp lays them out. Each value is computed as
//! the `gguf` package's `gguf.quants` computes it (`(d · scale) · q − dmin · min`, no fused
//! multiply-add), so the two decoders agree bit for bit (`tests/gguf_decoded.rs`).

use half::f16;

/// A format decoded here: elements and bytes per block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decoded {
    Q5_0,
    Q5_1,
    Q4K,
    Q5K,
    Q6K,
}

/// Elements per k-quant super-block.
const QK_K: usize = 256;

impl Decoded {
    pub(crate) fn block(self) -> (usize, usize) {
        match self {
            Decoded::Q5_0 => (32, 22),
            Decoded::Q5_1 => (32, 24),
            Decoded::Q4K => (QK_K, 144),
            Decoded::Q5K => (QK_K, 176),
            Decoded::Q6K => (QK_K, 210),
        }
    }

    /// Decodes whole blocks `data` into `out` (the same element count).
    pub(crate) fn decode(self, data: &[u8], out: &mut [f32]) {
        let (elems, bytes) = self.block();
        for (o, b) in out.chunks_exact_mut(elems).zip(data.chunks_exact(bytes)) {
            match self {
                Decoded::Q5_0 => q5(b, None, o),
                Decoded::Q5_1 => q5(b, Some(f16_at(b, 2)), o),
                Decoded::Q4K => q45k(b, false, o),
                Decoded::Q5K => q45k(b, true, o),
                Decoded::Q6K => q6k(b, o),
            }
        }
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// `Q5_0` (`d`, 32 high bits, 16 bytes of nibbles: `(q − 16) · d`) and `Q5_1` (`d`, `m`, the
/// same: `q · d + m`). Element `j < 16` is the low nibble of byte `j`, `j + 16` its high nibble;
/// bit `j` of the mask is element `j`'s fifth bit.
fn q5(b: &[u8], m: Option<f32>, out: &mut [f32]) {
    let d = f16_at(b, 0);
    let at = if m.is_some() { 4 } else { 2 };
    let qh = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let qs = &b[at + 4..at + 20];
    for j in 0..32 {
        let nib = if j < 16 { qs[j] & 0x0f } else { qs[j - 16] >> 4 };
        let q = nib | (((qh >> j) & 1) as u8) << 4;
        out[j] = match m {
            None => d * f32::from(q as i8 - 16),
            Some(m) => d * f32::from(q) + m,
        };
    }
}

/// The 6-bit scale and minimum of sub-block `s` of a `Q4_K` / `Q5_K` super-block, from its 12
/// scale bytes (llama.cpp's `get_scale_min_k4`).
fn scale_min(sc: &[u8], s: usize) -> (u8, u8) {
    if s < 4 {
        (sc[s] & 0x3f, sc[s + 4] & 0x3f)
    } else {
        ((sc[s + 4] & 0x0f) | ((sc[s - 4] >> 2) & 0x30), (sc[s + 4] >> 4) | ((sc[s] >> 2) & 0x30))
    }
}

/// `Q4_K` (`d`, `dmin`, 12 scale bytes, 128 bytes of nibbles) and `Q5_K` (the same with 32
/// bytes of fifth bits before the nibbles): 8 sub-blocks of 32, sub-block `s` = the low
/// (`s` even) or high nibbles of bytes `32·(s/2) ..`, plus bit `s` of each fifth-bit byte;
/// each element `(d · scale_s) · q − dmin · min_s`.
fn q45k(b: &[u8], five: bool, out: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let sc = &b[4..16];
    let (qh, qs) = if five { (&b[16..48], &b[48..176]) } else { (&b[0..0], &b[16..144]) };
    for s in 0..8 {
        let (scale, min) = scale_min(sc, s);
        let (ds, dm) = (d * f32::from(scale), dmin * f32::from(min));
        let bytes = &qs[32 * (s / 2)..32 * (s / 2 + 1)];
        for (l, &byte) in bytes.iter().enumerate() {
            let mut q = if s % 2 == 0 { byte & 0x0f } else { byte >> 4 };
            if five {
                q |= ((qh[l] >> s) & 1) << 4;
            }
            out[32 * s + l] = ds * f32::from(q) - dm;
        }
    }
}

/// `Q6_K` (128 bytes of low nibbles, 64 bytes of 2-bit highs, 16 signed scales, `d`): two
/// halves of 128; in half `h`, group `g` of 32 (0..4) takes the low (`g` < 2) or high nibbles
/// of bytes `64·h + 32·(g % 2) ..` and bits `2g, 2g+1` of bytes `32·h ..` of the highs; each
/// element `(d · scale) · (q − 32)`, one scale per 16 elements.
fn q6k(b: &[u8], out: &mut [f32]) {
    let (ql, qh, scales) = (&b[0..128], &b[128..192], &b[192..208]);
    let d = f16_at(b, 208);
    for h in 0..2 {
        for g in 0..4 {
            for l in 0..32 {
                let lo = ql[64 * h + 32 * (g % 2) + l];
                let nib = if g < 2 { lo & 0x0f } else { lo >> 4 };
                let hi = (qh[32 * h + l] >> (2 * g)) & 3;
                let q = (nib | (hi << 4)) as i8 - 32;
                let e = 128 * h + 32 * g + l;
                out[e] = (d * f32::from(scales[e / 16] as i8)) * f32::from(q);
            }
        }
    }
}
