//! One member's communicator: the [`Collective`](finetp_core::backend::Collective) implementation.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;

use finetp_core::backend::{CommError, DType, GroupSpec};

use super::check::{self, op};
use super::post::{Post, Ptr, Src};
use super::rendezvous::Shared;
use super::xfer::{Elem, chunk, copy_in, copy_range, sum_into};
use crate::CpuTensor;

/// One step of data movement, given every member's posted source range.
pub(super) type Phase<'a> = dyn FnMut(&[Src]) + 'a;

/// A member's handle on one in-process group (like an NCCL communicator held by one rank).
///
/// `Send + Sync`: it moves to its rank's thread, usually inside an `Arc<dyn Collective>`.
/// Dropping it (the rank finished, or panicked and unwound) makes every current and later
/// collective of its peers fail at once with [`CommError::PeerFailed`].
///
/// While its rank thread captures a graph, every collective also records itself (with a
/// [`Member`] clone, which does not count as a handle) and runs again at each replay.
pub struct InProcessComm {
    pub(super) m: Member,
}

/// What a collective needs of its member: the group's state and this member's place in it.
/// Clones are cheap and do not leave the group when dropped (only [`InProcessComm`] does).
#[derive(Clone)]
pub(super) struct Member {
    info: GroupSpec,
    pub(super) shared: Arc<Shared>,
}

impl InProcessComm {
    pub(super) fn new(shared: Arc<Shared>, rank: usize) -> Self {
        let info = GroupSpec { rank, ..shared.spec.clone() };
        Self { m: Member { info, shared } }
    }
}

impl Member {
    fn me(&self) -> usize {
        self.info.rank
    }

    fn n(&self) -> usize {
        self.info.size()
    }

    fn invalid(&self, op: &'static str, detail: String) -> CommError {
        CommError::InvalidArgument { group: self.info.name(), op, detail }
    }

    /// Checks for a group of one, where there is nobody to tell and the call is local.
    fn local(&self, op: &'static str, checked: Result<(), String>) -> Result<(), CommError> {
        checked.map_err(|d| self.invalid(op, d))
    }

    /// One round: arrive (posting `fill`, collecting `read` of every member's post), run each
    /// phase of data movement with a barrier after it, and report a peer whose movement
    /// failed. A phase that panics still attends the remaining barriers (its buffers must
    /// outlive its peers' reads) and then resumes unwinding.
    pub(super) fn round<const K: usize>(
        &self,
        op: &'static str,
        fill: impl FnOnce(&mut Post),
        read: impl Fn(&Post) -> Src,
        phases: [&mut Phase<'_>; K],
    ) -> Result<(), CommError> {
        let srcs = self.shared.arrive(self.me(), op, fill, read)?;
        let mut panicked = None;
        let mut failed = None;
        for phase in phases {
            if panicked.is_none() && failed.is_none() {
                panicked = catch_unwind(AssertUnwindSafe(|| phase(&srcs))).err();
            }
            failed = self.shared.barrier(self.me(), panicked.is_some());
        }
        if let Some(payload) = panicked {
            resume_unwind(payload);
        }
        match failed {
            Some(member) => Err(CommError::PeerFailed {
                group: self.info.name(),
                op,
                member,
                global_rank: self.info.global_ranks.get(member).copied().unwrap_or(usize::MAX),
            }),
            None => Ok(()),
        }
    }
}

impl Drop for InProcessComm {
    fn drop(&mut self) {
        self.m.shared.leave(self.m.me());
    }
}

impl std::fmt::Debug for InProcessComm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessComm").field("info", &self.m.info).finish()
    }
}

fn bytes_ptr(t: &CpuTensor) -> Src {
    let b = t.buffer().as_bytes();
    Src { ptr: Ptr(b.as_ptr().cast_mut()), len: b.len() }
}

/// Row shape (all dims but the first).
fn row_shape(t: &CpuTensor) -> &[usize] {
    t.shape().get(1..).unwrap_or(&[])
}

fn row_bytes(t: &CpuTensor) -> usize {
    t.row_len() * t.dtype().size_in_bytes()
}

/// The all-reduce's two phases for element type `T`: sum my chunk of everyone's tensor into my
/// own tensor (nobody else reads my chunk of mine in this phase), then copy every other
/// member's summed chunk from its tensor (which it no longer writes) into mine.
fn all_reduce_phases<T: Elem>(
    me: usize,
    n: usize,
    numel: usize,
    base: *mut T,
) -> (impl FnMut(&[Src]), impl FnMut(&[Src])) {
    let reduce = move |srcs: &[Src]| {
        let (lo, hi) = chunk(numel, n, me);
        // SAFETY: every member is blocked in this round; member `i` writes only chunk `i` of
        // its own tensor and reads only chunk `i` of the others, so chunk `me` of mine is
        // touched by nobody else; `sum_into` tolerates `dst` aliasing `srcs[me]`.
        unsafe { sum_into::<T>(srcs, lo, hi - lo, base.wrapping_add(lo)) };
    };
    let gather = move |srcs: &[Src]| {
        for (j, src) in srcs.iter().enumerate().filter(|(j, _)| *j != me) {
            let (lo, hi) = chunk(numel, n, j);
            // SAFETY: after the middle barrier member `j` only reads chunk `j` of its tensor
            // (others copy it) and writes the other chunks of its own; I write chunk `j` of
            // mine, which nobody reads in this phase.
            unsafe { copy_range::<T>(*src, lo, hi - lo, base) };
        }
    };
    (reduce, gather)
}

impl Member {
    /// Reduce-scatter then all-gather, in place in every member's tensor: about `2·B` read and
    /// `B` written per member for a `B`-byte tensor, the summing split evenly across members.
    /// u32 sums wrap.
    pub(super) fn all_reduce_sum(&self, t: &mut CpuTensor) -> Result<(), CommError> {
        let (me, n) = (self.me(), self.n());
        let checked = check::all_reduce(t);
        if n == 1 {
            return self.local(op::ALL_REDUCE, checked);
        }
        let (dtype, numel) = (t.dtype(), t.numel());
        let buf = Src { ptr: Ptr(t.buffer_mut().as_bytes_mut().as_mut_ptr()), len: t.size_in_bytes() };
        let invalid = checked.err();
        let valid = invalid.is_none();
        let fill = |p: &mut Post| {
            p.dtype = Some(dtype);
            p.shape.extend_from_slice(t.shape());
            p.invalid = invalid;
            if valid {
                p.buf = buf;
            }
        };
        let read = |p: &Post| p.buf;
        if dtype == DType::U32 {
            let (mut a, mut b) = all_reduce_phases::<u32>(me, n, numel, buf.ptr.0.cast());
            self.round(op::ALL_REDUCE, fill, read, [&mut a, &mut b])
        } else {
            let (mut a, mut b) = all_reduce_phases::<f32>(me, n, numel, buf.ptr.0.cast());
            self.round(op::ALL_REDUCE, fill, read, [&mut a, &mut b])
        }
    }

    /// Each member copies every member's rows straight into its `out`: `T·S` bytes read and
    /// written per member, the same as a memcpy of `out`.
    pub(super) fn all_gather(&self, mine: &CpuTensor, counts: &[usize], out: &mut CpuTensor) -> Result<(), CommError> {
        let (me, n) = (self.me(), self.n());
        let checked = check::all_gather(mine, counts, out, me, n);
        if n == 1 {
            self.local(op::ALL_GATHER, checked)?;
            out.buffer_mut().as_bytes_mut().copy_from_slice(mine.buffer().as_bytes());
            return Ok(());
        }
        let invalid = checked.err();
        let valid = invalid.is_none();
        let rb = row_bytes(mine);
        let fill = |p: &mut Post| {
            p.dtype = Some(mine.dtype());
            p.shape.extend_from_slice(row_shape(mine));
            p.counts.extend_from_slice(counts);
            p.invalid = invalid;
            if valid {
                p.buf = bytes_ptr(mine);
            }
        };
        let mut gather = |srcs: &[Src]| {
            let mut dst = out.buffer_mut().as_bytes_mut();
            for (src, &c) in srcs.iter().zip(counts) {
                let (here, rest) = dst.split_at_mut(c * rb);
                // SAFETY: peers' `mine` are only read in this round; `here` is my own output.
                unsafe { copy_in::<u8>(*src, 0, here) };
                dst = rest;
            }
        };
        self.round(op::ALL_GATHER, fill, |p| p.buf, [&mut gather])
    }

    /// Member `i` sums rows `offset(i)..offset(i) + counts[i]` of every member's `all` into its
    /// `out`, in member order: `N·counts[i]·S` bytes read, `counts[i]·S` written.
    pub(super) fn reduce_scatter_sum(&self, all: &CpuTensor, counts: &[usize], out: &mut CpuTensor) -> Result<(), CommError> {
        let (me, n) = (self.me(), self.n());
        let checked = check::reduce_scatter(all, counts, out, me, n);
        if n == 1 {
            self.local(op::REDUCE_SCATTER, checked)?;
            out.buffer_mut().as_bytes_mut().copy_from_slice(all.buffer().as_bytes());
            return Ok(());
        }
        let invalid = checked.err();
        let valid = invalid.is_none();
        let fill = |p: &mut Post| {
            p.dtype = Some(all.dtype());
            p.shape.extend_from_slice(row_shape(all));
            p.counts.extend_from_slice(counts);
            p.invalid = invalid;
            if valid {
                p.buf = bytes_ptr(all);
            }
        };
        let row = all.row_len();
        let mut reduce = |srcs: &[Src]| {
            let first: usize = counts.iter().take(me).sum();
            let len = counts[me] * row;
            let dst = out.buffer_mut().as_bytes_mut().as_mut_ptr().cast::<f32>();
            // SAFETY: peers' `all` are only read in this round; `out` is mine, an f32 buffer
            // (checked) of exactly `len` elements.
            unsafe { sum_into::<f32>(srcs, first * row, len, dst) };
        };
        self.round(op::REDUCE_SCATTER, fill, |p| p.buf, [&mut reduce])
    }

    /// Each member copies the rows addressed to it straight from every sender's `send`:
    /// `sum(recv_counts)·S` bytes read and written per member.
    pub(super) fn all_to_all(
        &self,
        send: &CpuTensor,
        send_counts: &[usize],
        recv_counts: &[usize],
        out: &mut CpuTensor,
    ) -> Result<(), CommError> {
        let (me, n) = (self.me(), self.n());
        let checked = check::all_to_all(send, send_counts, recv_counts, out, n);
        if n == 1 {
            self.local(op::ALL_TO_ALL, checked)?;
            out.buffer_mut().as_bytes_mut().copy_from_slice(send.buffer().as_bytes());
            return Ok(());
        }
        let invalid = checked.err();
        let valid = invalid.is_none();
        let rb = row_bytes(send);
        let fill = |p: &mut Post| {
            p.dtype = Some(send.dtype());
            p.shape.extend_from_slice(row_shape(send));
            p.counts.extend_from_slice(send_counts);
            p.recv_counts.extend_from_slice(recv_counts);
            p.invalid = invalid;
            if valid {
                p.buf = bytes_ptr(send);
            }
        };
        // The rows member `p` sends to me; out-of-range sums give an empty range that
        // `copy_in` refuses.
        let read = |p: &Post| {
            let off = p.counts.iter().take(me).fold(0usize, |a, &c| a.saturating_add(c)).saturating_mul(rb);
            let len = p.counts.get(me).map_or(0, |&c| c.saturating_mul(rb));
            match off.checked_add(len) {
                Some(end) if end <= p.buf.len => Src { ptr: Ptr(p.buf.ptr.0.wrapping_add(off)), len },
                _ => Src::default(),
            }
        };
        let mut exchange = |srcs: &[Src]| {
            let mut dst = out.buffer_mut().as_bytes_mut();
            for (src, &c) in srcs.iter().zip(recv_counts) {
                let (here, rest) = dst.split_at_mut(c * rb);
                // SAFETY: senders' `send` are only read in this round; `here` is my output.
                unsafe { copy_in::<u8>(*src, 0, here) };
                dst = rest;
            }
        };
        self.round(op::ALL_TO_ALL, fill, read, [&mut exchange])
    }

    /// Every non-root copies the root's tensor straight into its own: `B` bytes read and
    /// written per non-root, nothing on the root.
    pub(super) fn broadcast(&self, t: &mut CpuTensor, root: usize) -> Result<(), CommError> {
        let (me, n) = (self.me(), self.n());
        let checked = check::broadcast(t, root, n);
        if n == 1 {
            return self.local(op::BROADCAST, checked);
        }
        let invalid = checked.err();
        let post_buf = invalid.is_none() && me == root;
        let (dtype, shape, buf) = (t.dtype(), t.shape().to_vec(), bytes_ptr(t));
        let fill = |p: &mut Post| {
            p.dtype = Some(dtype);
            p.shape.extend_from_slice(&shape);
            p.root = root;
            p.invalid = invalid;
            if post_buf {
                p.buf = buf;
            }
        };
        let mut copy = |srcs: &[Src]| {
            if me != root {
                // SAFETY: the root's tensor is only read in this round; mine is not posted.
                unsafe { copy_in::<u8>(srcs[root], 0, t.buffer_mut().as_bytes_mut()) };
            }
        };
        self.round(op::BROADCAST, fill, |p| p.buf, [&mut copy])
    }

    /// One rendezvous; moves nothing.
    pub(super) fn barrier(&self) -> Result<(), CommError> {
        if self.n() == 1 {
            return Ok(());
        }
        self.shared.arrive(self.me(), op::BARRIER, |_| {}, |p| p.buf).map(drop)
    }
}

// Every collective goes through `launch`: run now, and recorded while capturing.
collective_through_launch!(InProcessComm, m);
