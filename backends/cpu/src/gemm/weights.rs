//! Weight matrices in their stored dtype, and how the microkernel reads each dtype.
//!
//! 16-bit weights are never materialised as f32 whole: at decode shapes the weight bytes *are*
//! the cost, so reading half as many of them is the point of storing bf16/f16 at all. The tile
//! widens them in registers as it loads them (and so again for each group of activation rows,
//! which is cheap next to the FMAs); only the last few rows of a range, fewer than a tile, are
//! widened into a small zero-padded panel first.

use finetp_core::backend::BackendError;
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
            other => Err(BackendError::DType { op, expected: "f32, bf16 or f16", got: other.dtype() }),
        }
    }

    /// Whether the kernel pairs lanes for this dtype (see [`Elem::PAIRED`]).
    pub(super) fn paired(self) -> bool {
        matches!(self, Weights::BF16(_))
    }
}

/// A weight element type the microkernel can read directly.
pub(super) trait Elem: Copy + Send + Sync + 'static {
    /// The lane order of a 16-element step (see `tile`): `false`, lane `l` of half `h` is
    /// element `8h + l`; `true` (bf16), it is element `2l + h`, so that one 32-byte load yields
    /// both halves with a shift and a mask.
    const PAIRED: bool;

    fn to_f32(self) -> f32;

    /// The 16 elements at `p` as the two 8-lane f32 halves of a step, in lane order.
    ///
    /// # Safety
    /// `p..p + 16` must be readable, and the caller must be compiled with AVX2 and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load_step(p: *const Self) -> [std::arch::x86_64::__m256; 2];
}

impl Elem for f32 {
    const PAIRED: bool = false;

    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load_step(p: *const Self) -> [std::arch::x86_64::__m256; 2] {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees 16 readable elements and AVX.
        unsafe { [_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))] }
    }
}

impl Elem for bf16 {
    const PAIRED: bool = true;

    /// Exact: the bf16 bits are the top half of the f32.
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f32::from_bits(u32::from(self.to_bits()) << 16)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load_step(p: *const Self) -> [std::arch::x86_64::__m256; 2] {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees 16 readable elements (32 bytes) and AVX2.
        unsafe {
            // 32-bit lane l holds elements 2l (low half) and 2l + 1 (high half).
            let v = _mm256_loadu_si256(p.cast::<__m256i>());
            let even = _mm256_slli_epi32::<16>(v);
            let odd = _mm256_and_si256(v, _mm256_set1_epi32(0xFFFF_0000_u32 as i32));
            [_mm256_castsi256_ps(even), _mm256_castsi256_ps(odd)]
        }
    }
}

impl Elem for f16 {
    const PAIRED: bool = false;

    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load_step(p: *const Self) -> [std::arch::x86_64::__m256; 2] {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees 16 readable elements (32 bytes) and F16C.
        unsafe {
            let lo = _mm256_cvtph_ps(_mm_loadu_si128(p.cast::<__m128i>()));
            let hi = _mm256_cvtph_ps(_mm_loadu_si128(p.add(8).cast::<__m128i>()));
            [lo, hi]
        }
    }
}
