//! The block formats a weight may be stored in ([`DType::Q8_0`], [`DType::Q4_0`],
//! [`DType::Q4_1`]: GGUF's layouts, byte for byte), and their reference decoding to f32.
//!
//! Every backend and the loader decode through here, so "what a block means" is written once;
//! a backend's own kernels are checked against it. Blocks never cross rows: a `[rows, cols]`
//! tensor has `cols / 32` blocks per row, and a slice keeps whole blocks.

use half::f16;

use super::{BackendError, DType};

/// The f16 stored little-endian at `b[i..i + 2]`.
#[inline]
pub fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// One block's 32 integer quants in element order, its scale `d` and (`Q4_1`) minimum `m`: the
/// element is `d · q + m`. `Q4_0`'s offset of 8 is taken off `q`; in the 4-bit formats element
/// `j` is the low nibble of byte `j`, element `j + 16` its high nibble.
///
/// # Panics
/// `dtype` is not a block format, or `blk` is shorter than one block of it.
#[inline]
pub fn block_ints(dtype: DType, blk: &[u8]) -> ([i32; 32], f32, f32) {
    let mut q = [0i32; 32];
    match dtype {
        DType::Q8_0 => {
            for (o, b) in q.iter_mut().zip(&blk[2..34]) {
                *o = i32::from(*b as i8);
            }
            (q, f16_at(blk, 0), 0.0)
        }
        DType::Q4_0 | DType::Q4_1 => {
            let (off, base) = if dtype == DType::Q4_0 { (2, 8) } else { (4, 0) };
            for (j, b) in blk[off..off + 16].iter().enumerate() {
                q[j] = i32::from(b & 0x0f) - base;
                q[j + 16] = i32::from(b >> 4) - base;
            }
            (q, f16_at(blk, 0), if dtype == DType::Q4_1 { f16_at(blk, 2) } else { 0.0 })
        }
        other => panic!("{other} is not a block format"),
    }
}

/// Decodes whole blocks of `dtype` in `bytes` into `out` (32 floats per block).
///
/// # Errors
/// `dtype` is not a block format, or `bytes` / `out` are not the same whole number of blocks.
pub fn decode(dtype: DType, bytes: &[u8], out: &mut [f32]) -> Result<(), BackendError> {
    let (be, bb) = (dtype.block_elems(), dtype.block_bytes());
    if !dtype.is_quantized() || !bytes.len().is_multiple_of(bb) || bytes.len() / bb * be != out.len() {
        return Err(BackendError::Shape(format!("decode: {} bytes of {dtype} into {} floats", bytes.len(), out.len())));
    }
    for (o, blk) in out.chunks_exact_mut(be).zip(bytes.chunks_exact(bb)) {
        let (q, d, m) = block_ints(dtype, blk);
        for (v, q) in o.iter_mut().zip(q) {
            // Q4_1 adds its minimum; the others have none (and no `+ 0.0`, which would turn -0 into +0).
            *v = if dtype == DType::Q4_1 { d * q as f32 + m } else { d * q as f32 };
        }
    }
    Ok(())
}

/// The first block of `bytes` (whole blocks of `dtype`) whose scale or minimum is NaN or
/// infinite, with that value: such a block decodes to non-finite weights.
pub fn first_non_finite_scale(dtype: DType, bytes: &[u8]) -> Option<(usize, f32)> {
    let scales = if dtype == DType::Q4_1 { &[0usize, 2][..] } else { &[0][..] };
    bytes.chunks_exact(dtype.block_bytes().max(1)).enumerate().find_map(|(b, blk)| {
        scales.iter().map(|&at| f16_at(blk, at)).find(|v| !v.is_finite()).map(|v| (b, v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_decode_by_their_formulas() {
        let d = f16::from_f32(0.5).to_le_bytes();
        let m = f16::from_f32(-1.0).to_le_bytes();
        let mut q8 = d.to_vec();
        q8.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let mut out = [0f32; 32];
        decode(DType::Q8_0, &q8, &mut out).unwrap();
        assert_eq!(out[0], -8.0);
        assert_eq!(out[31], 7.5);
        let mut q4 = d.to_vec();
        q4.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        decode(DType::Q4_0, &q4, &mut out).unwrap();
        assert_eq!((out[0], out[15], out[16], out[31]), (-4.0, 3.5, 3.5, -4.0));
        let mut q41 = d.to_vec();
        q41.extend(m);
        q41.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        decode(DType::Q4_1, &q41, &mut out).unwrap();
        assert_eq!((out[0], out[15], out[16], out[31]), (-1.0, 6.5, 6.5, -1.0));
        assert!(decode(DType::Q4_1, &q41[..19], &mut out).is_err());
        assert!(decode(DType::F32, &q41, &mut out).is_err());
    }
}
