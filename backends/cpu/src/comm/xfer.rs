//! Data movement between members' buffers, through the pointers they posted.
//!
//! The unsafe core of the in-process collectives. Every function here runs between a round's first and last
//! barrier, when each member that posted a pointer is blocked inside the same collective, so
//! its buffer is alive; the callers divide the writes so that no byte is written while anyone
//! else reads or writes it (see each caller). Ranges are checked against the posted lengths,
//! and a violation panics (caught by the caller, reported to peers as `PeerFailed`) rather than
//! touching memory outside a buffer.

use super::post::Src;

/// Elements summed per block: the running sum of a block stays in L1 while every member's
/// slice of it is added.
const BLOCK: usize = 2048;

/// An element type the reductions add.
pub(super) trait Elem: Copy + Default + 'static {
    fn add(self, other: Self) -> Self;
}

impl Elem for f32 {
    #[inline(always)]
    fn add(self, other: Self) -> Self {
        self + other
    }
}

impl Elem for u32 {
    /// Wrapping: token ids and counters never overflow in practice, and a collective must not
    /// panic on a value.
    #[inline(always)]
    fn add(self, other: Self) -> Self {
        self.wrapping_add(other)
    }
}

/// `src.ptr + off` as a `*const T`, after checking that `len` elements fit and are aligned.
fn at<T>(src: Src, off: usize, len: usize) -> *const T {
    let size = std::mem::size_of::<T>();
    let end = off.checked_add(len).and_then(|e| e.checked_mul(size));
    assert!(end.is_some_and(|e| e <= src.len), "range {off}+{len} outside a posted buffer of {} bytes", src.len);
    // In bounds (checked above), so `add` stays inside the allocation.
    let p = src.ptr.0.wrapping_add(off * size).cast::<T>().cast_const();
    assert!(len == 0 || (!p.is_null() && p.is_aligned()), "misaligned or null posted buffer");
    p
}

/// Copies `dst.len()` elements from `src`, starting at element `off`, into `dst`.
///
/// # Safety
/// `src` was posted by a member blocked in the current round, and nobody writes that range
/// until the round's next barrier; `dst` does not overlap it.
pub(super) unsafe fn copy_in<T: Copy>(src: Src, off: usize, dst: &mut [T]) {
    if dst.is_empty() {
        return;
    }
    let p = at::<T>(src, off, dst.len());
    // SAFETY: `at` checked bounds and alignment; the caller guarantees liveness and no writer.
    let s = unsafe { std::slice::from_raw_parts(p, dst.len()) };
    dst.copy_from_slice(s);
}

/// `dst[k] = srcs[0][off + k] + srcs[1][off + k] + ...` for `k < len`, summed in member order
/// (so every member computing a given element gets the same bits, and tests can compare with
/// a sequential sum exactly).
///
/// # Safety
/// As [`copy_in`] for every `srcs[i]` over `off..off + len`; `dst` is valid for `len` writes
/// that nobody else reads or writes until the next barrier. `dst` may be the same memory as
/// one of the sources' ranges (the all-reduce sums into its own tensor): each block is read
/// completely into a local buffer before it is written.
pub(super) unsafe fn sum_into<T: Elem>(srcs: &[Src], off: usize, len: usize, dst: *mut T) {
    let Some((first, rest)) = srcs.split_first() else { return };
    let first = at::<T>(*first, off, len);
    let rest: Vec<*const T> = rest.iter().map(|s| at::<T>(*s, off, len)).collect();
    let mut acc = [T::default(); BLOCK];
    let mut start = 0;
    while start < len {
        let n = BLOCK.min(len - start);
        let acc = &mut acc[..n];
        // SAFETY: `start + n <= len`, and each pointer is valid for `len` reads (checked by
        // `at`); nobody writes these ranges during this phase.
        let s0 = unsafe { std::slice::from_raw_parts(first.add(start), n) };
        match rest.first() {
            // The first two sources in one pass (the common two-member case is one pass).
            Some(p1) => {
                // SAFETY: as above.
                let s1 = unsafe { std::slice::from_raw_parts(p1.add(start), n) };
                for ((a, x), y) in acc.iter_mut().zip(s0).zip(s1) {
                    *a = x.add(*y);
                }
            }
            None => acc.copy_from_slice(s0),
        }
        for p in rest.iter().skip(1) {
            // SAFETY: as above.
            let s = unsafe { std::slice::from_raw_parts(p.add(start), n) };
            for (a, x) in acc.iter_mut().zip(s) {
                *a = a.add(*x);
            }
        }
        // SAFETY: the caller owns `dst[..len]` for writing; `acc` is a local buffer.
        unsafe { std::ptr::copy_nonoverlapping(acc.as_ptr(), dst.add(start), n) };
        start += n;
    }
}

/// Copies elements `off..off + len` of `src` to the same positions of `dst`.
///
/// # Safety
/// As [`copy_in`] for `src`; `dst` is valid for writes at `off..off + len`, which nobody else
/// reads or writes until the next barrier.
pub(super) unsafe fn copy_range<T: Copy>(src: Src, off: usize, len: usize, dst: *mut T) {
    if len == 0 {
        return;
    }
    let p = at::<T>(src, off, len);
    // SAFETY: source checked by `at`; destination guaranteed by the caller; distinct buffers.
    unsafe { std::ptr::copy_nonoverlapping(p, dst.add(off), len) };
}

/// Bounds of member `i`'s chunk when `len` elements are split across `n` members as evenly as
/// possible (the all-reduce's reduce-scatter half).
pub(super) fn chunk(len: usize, n: usize, i: usize) -> (usize, usize) {
    let (base, extra) = (len / n, len % n);
    let lo = i * base + i.min(extra);
    (lo, lo + base + usize::from(i < extra))
}
