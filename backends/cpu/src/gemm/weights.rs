//! Weight matrices in their stored dtype, and how the microkernel reads each dtype.
//!
//! 16-bit weights are never materialised as f32 whole: at decode shapes the weight bytes *are*
//! the cost, so reading half as many of them is the point of storing bf16/f16 at all. The tile
//! either widens them in registers as it loads them (few activation rows: each weight is used
//! once) or widens a small panel into an L1-resident buffer first (many activation rows: the
//! panel is reused by every group of rows, so converting once is cheaper).

use finetp_core::backend::{BackendError, DType};
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use crate::storage::CpuStorage;

/// A read-only view of a `[n, k]` weight matrix (or a batch of them) in its stored dtype.
#[derive(Clone, Copy)]
pub(super) enum Weights<'a> {
    F32(&'a [f32]),
    BF16(&'a [bf16]),
    F16(&'a [f16]),
}

impl<'a> Weights<'a> {
    /// The float view of `s`, or a dtype error naming `op`.
    pub(super) fn of(s: &'a CpuStorage, op: &'static str) -> Result<Self, BackendError> {
        match s {
            CpuStorage::F32(v) => Ok(Weights::F32(v)),
            CpuStorage::BF16(v) => Ok(Weights::BF16(v)),
            CpuStorage::F16(v) => Ok(Weights::F16(v)),
            CpuStorage::U32(_) => Err(BackendError::DType { op, expected: "f32, bf16 or f16", got: DType::U32 }),
        }
    }

    /// Elements `range` of the flat data (e.g. one matrix of a batch).
    pub(super) fn slice(self, range: std::ops::Range<usize>) -> Self {
        match self {
            Weights::F32(v) => Weights::F32(&v[range]),
            Weights::BF16(v) => Weights::BF16(&v[range]),
            Weights::F16(v) => Weights::F16(&v[range]),
        }
    }
}

/// A weight element type the microkernel can read directly.
pub(super) trait Elem: Copy + Send + Sync + 'static {
    /// True for f32, which never needs widening.
    const IS_F32: bool;

    fn to_f32(self) -> f32;

    /// Widens `src` into `dst` (same length).
    fn widen(src: &[Self], dst: &mut [f32]);

    /// Eight consecutive elements at `p` as f32 lanes.
    ///
    /// # Safety
    /// `p..p + 8` must be readable, and the CPU must have AVX2 and F16C (the caller is compiled
    /// with them, see `tile`).
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;
}

impl Elem for f32 {
    const IS_F32: bool = true;

    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }

    fn widen(src: &[Self], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256 {
        // SAFETY: the caller guarantees 8 readable elements and AVX.
        unsafe { std::arch::x86_64::_mm256_loadu_ps(p) }
    }
}

impl Elem for bf16 {
    const IS_F32: bool = false;

    /// Exact: the bf16 bits are the top half of the f32.
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f32::from_bits(u32::from(self.to_bits()) << 16)
    }

    fn widen(src: &[Self], dst: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            if super::tile::avx2_available() {
                // SAFETY: AVX2 was detected at run time just above.
                return unsafe { widen_bf16_avx2(src, dst) };
            }
        }
        widen_bf16(src, dst);
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees 8 readable elements (16 bytes) and AVX2.
        unsafe {
            let h = _mm_loadu_si128(p.cast::<__m128i>());
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
        }
    }
}

impl Elem for f16 {
    const IS_F32: bool = false;

    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }

    /// `half`'s slice conversion uses F16C when the CPU has it.
    fn widen(src: &[Self], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst);
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees 8 readable elements (16 bytes) and F16C.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast::<__m128i>())) }
    }
}

#[inline(always)]
fn widen_bf16(src: &[bf16], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = Elem::to_f32(*s);
    }
}

/// The same loop compiled for AVX2, where it vectorises to a zero-extend and a shift.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn widen_bf16_avx2(src: &[bf16], dst: &mut [f32]) {
    widen_bf16(src, dst);
}
