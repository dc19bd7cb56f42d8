//! Collectives for groups whose members live in several processes, over the launcher's
//! [`HostTransport`] (MPI point-to-point between processes, shared memory inside one).
//!
//! Every collective is one or two complete exchanges: each member posts the bytes each peer
//! needs, then receives what it needs from each. Sums are taken by every member over the
//! members' contributions **in member order** (`((m0 + m1) + m2) + …`), exactly as the
//! in-process collectives sum, so a run whose ranks are processes gives the same bits as the
//! same run with its ranks as threads.
//!
//! Checks follow the in-process rules: a member with bad arguments fails with
//! [`CommError::InvalidArgument`] and still sends its peers a message they refuse (a call
//! fingerprint nobody else has), so they fail with [`CommError::Mismatch`] at once instead of
//! waiting out the timeout. Members that disagree on dtype, shape, counts or root differ in
//! their fingerprints; the transport reports it.
//!
//! # Bytes moved (per member, `S` bytes per row, `N` members)
//! - `all_gather`: sends its `counts[me]·S` to each of the `N-1` others; receives the rest.
//! - `reduce_scatter_sum`: sends member `j` its `counts[j]` rows; receives `N-1` copies of its
//!   own `counts[me]` rows, and sums them.
//! - `all_reduce_sum` of `B` bytes: a reduce-scatter of `B/N` chunks, then an all-gather of
//!   the summed chunks: about `2·B` sent and received.
//! - `all_to_all`: what the counts say; `broadcast`: `B` from the root to each other member.

use std::sync::Arc;

use finetp_core::backend::{Call, CommError, DType, GroupSpec, HostTransport, POISONED, TRAILER_ROOM, fingerprint};

use super::check::{self, op};
use super::xfer::{Elem, chunk};
use crate::CpuTensor;

/// A member's handle on a group that spans processes.
pub struct RemoteComm {
    m: Remote,
}

/// What a collective needs: the group and the transport (cheap to clone, for graph replay).
#[derive(Clone)]
struct Remote {
    info: GroupSpec,
    tx: Arc<dyn HostTransport>,
}

impl RemoteComm {
    /// This member's handle on `spec` over `tx`, after checking that every member names the
    /// same group (one exchange, so a member that never comes is a timeout here).
    ///
    /// # Errors
    /// As [`HostTransport::exchange`].
    pub fn connect(spec: &GroupSpec, tx: Arc<dyn HostTransport>) -> Result<Self, CommError> {
        let m = Remote { info: spec.clone(), tx };
        let mut parts = vec![spec.size() as u64];
        parts.extend(spec.global_ranks.iter().map(|&r| r as u64));
        m.exchange(Call { op: "connect", fingerprint: fingerprint(&parts) }, |_| Vec::new(), |_| 0)?;
        Ok(Self { m })
    }
}

impl Remote {
    fn me(&self) -> usize {
        self.info.rank
    }

    fn n(&self) -> usize {
        self.info.size()
    }

    fn others(&self) -> impl Iterator<Item = usize> + use<> {
        let me = self.me();
        (0..self.n()).filter(move |&j| j != me)
    }

    /// Sends `send(j)` to every other member and receives `len(i)` bytes from each; returns
    /// the received bytes indexed by member (empty at `me`).
    fn exchange(&self, call: Call, send: impl Fn(usize) -> Vec<u8>, len: impl Fn(usize) -> usize) -> Result<Vec<Vec<u8>>, CommError> {
        let sends = self.others().map(|j| (j, send(j))).collect();
        let recvs: Vec<(usize, usize)> = self.others().map(|i| (i, len(i))).collect();
        let got = self.tx.exchange(&self.info, call, sends, &recvs).map_err(|e| self.spread(e))?;
        let mut by_member = vec![Vec::new(); self.n()];
        for ((i, _), bytes) in recvs.into_iter().zip(got) {
            by_member[i] = bytes;
        }
        Ok(by_member)
    }

    /// A mismatch seen here is passed on to every peer (as a refused message), so that a peer
    /// waiting on this member for a message of its own call fails at once too.
    fn spread(&self, e: CommError) -> CommError {
        if let CommError::Mismatch { detail, .. } = &e {
            let sends = self.others().map(|j| (j, detail.clone().into_bytes())).collect();
            let _ = self.tx.exchange(&self.info, Call { op: "mismatch", fingerprint: POISONED }, sends, &[]);
        }
        e
    }

    /// Own arguments bad: tell the peers (they fail with a mismatch) and fail.
    fn refuse(&self, op: &'static str, detail: String) -> CommError {
        // Best effort: the peers learn of it from this message or from their timeout.
        let sends = self.others().map(|j| (j, detail.clone().into_bytes())).collect();
        let _ = self.tx.exchange(&self.info, Call { op, fingerprint: POISONED }, sends, &[]);
        CommError::InvalidArgument { group: self.info.name(), op, detail }
    }

    fn checked(&self, op: &'static str, checked: Result<(), String>) -> Result<(), CommError> {
        checked.map_err(|d| if self.n() == 1 { CommError::InvalidArgument { group: self.info.name(), op, detail: d } } else { self.refuse(op, d) })
    }

    fn all_reduce_sum(&self, t: &mut CpuTensor) -> Result<(), CommError> {
        self.checked(op::ALL_REDUCE, check::all_reduce(t))?;
        let (me, n) = (self.me(), self.n());
        if n == 1 {
            return Ok(());
        }
        let (dtype, numel, es) = (t.dtype(), t.numel(), t.dtype().size_in_bytes());
        let fp = call_fingerprint(op::ALL_REDUCE, dtype, t.shape(), &[]);
        let call = Call { op: op::ALL_REDUCE, fingerprint: fp };
        let bytes = t.buffer_mut().as_bytes_mut();
        let range = |i: usize| {
            let (lo, hi) = chunk(numel, n, i);
            lo * es..hi * es
        };
        // Reduce-scatter of chunks: member j sums chunk j over every member, in member order.
        let got = self.exchange(call, |j| message(&bytes[range(j)]), |_| range(me).len())?;
        let mine = range(me);
        let own = bytes[mine.clone()].to_vec();
        let parts: Vec<&[u8]> = (0..n).map(|i| if i == me { own.as_slice() } else { got[i].as_slice() }).collect();
        match dtype {
            DType::U32 => sum_in_member_order::<u32>(&parts, &mut bytes[mine.clone()]),
            _ => sum_in_member_order::<f32>(&parts, &mut bytes[mine.clone()]),
        }
        // All-gather of the summed chunks.
        let summed = bytes[mine].to_vec();
        let got = self.exchange(call, |_| message(&summed), |i| range(i).len())?;
        for (i, chunk) in got.into_iter().enumerate().filter(|(i, _)| *i != me) {
            bytes[range(i)].copy_from_slice(&chunk);
        }
        Ok(())
    }

    fn all_gather(&self, mine: &CpuTensor, counts: &[usize], out: &mut CpuTensor) -> Result<(), CommError> {
        let (me, n) = (self.me(), self.n());
        self.checked(op::ALL_GATHER, check::all_gather(mine, counts, out, me, n))?;
        let rb = row_bytes(mine);
        let src = mine.buffer().as_bytes();
        let call = Call { op: op::ALL_GATHER, fingerprint: call_fingerprint(op::ALL_GATHER, mine.dtype(), row_shape(mine), counts) };
        let got = self.exchange(call, |_| message(src), |i| counts[i] * rb)?;
        concat_in_member_order(out.buffer_mut().as_bytes_mut(), me, src, &got);
        Ok(())
    }

    fn reduce_scatter_sum(&self, all: &CpuTensor, counts: &[usize], out: &mut CpuTensor) -> Result<(), CommError> {
        let (me, n) = (self.me(), self.n());
        self.checked(op::REDUCE_SCATTER, check::reduce_scatter(all, counts, out, me, n))?;
        let rb = row_bytes(all);
        let src = all.buffer().as_bytes();
        let seg = |j| segment(counts, j, rb);
        let call = Call { op: op::REDUCE_SCATTER, fingerprint: call_fingerprint(op::REDUCE_SCATTER, all.dtype(), row_shape(all), counts) };
        let got = self.exchange(call, |j| message(&src[seg(j)]), |_| counts[me] * rb)?;
        let parts: Vec<&[u8]> = (0..n).map(|i| if i == me { &src[seg(me)] } else { got[i].as_slice() }).collect();
        sum_in_member_order::<f32>(&parts, out.buffer_mut().as_bytes_mut());
        Ok(())
    }

    fn all_to_all(&self, send: &CpuTensor, send_counts: &[usize], recv_counts: &[usize], out: &mut CpuTensor) -> Result<(), CommError> {
        let (me, n) = (self.me(), self.n());
        let own = |()| match (recv_counts.get(me), send_counts.get(me)) {
            (Some(r), Some(s)) if r != s => Err(format!("recv_counts[me] = {r} but send_counts[me] = {s}")),
            _ => Ok(()),
        };
        self.checked(op::ALL_TO_ALL, check::all_to_all(send, send_counts, recv_counts, out, n).and_then(own))?;
        let rb = row_bytes(send);
        let src = send.buffer().as_bytes();
        let seg = |j| segment(send_counts, j, rb);
        let call = Call { op: op::ALL_TO_ALL, fingerprint: call_fingerprint(op::ALL_TO_ALL, send.dtype(), row_shape(send), &[]) };
        let got = self.exchange(call, |j| message(&src[seg(j)]), |i| recv_counts[i] * rb)?;
        concat_in_member_order(out.buffer_mut().as_bytes_mut(), me, &src[seg(me)], &got);
        Ok(())
    }

    fn broadcast(&self, t: &mut CpuTensor, root: usize) -> Result<(), CommError> {
        let (me, n) = (self.me(), self.n());
        self.checked(op::BROADCAST, check::broadcast(t, root, n))?;
        if n == 1 {
            return Ok(());
        }
        let call = Call { op: op::BROADCAST, fingerprint: call_fingerprint(op::BROADCAST, t.dtype(), t.shape(), &[root]) };
        let size = t.size_in_bytes();
        let sends = if me == root { self.others().map(|j| (j, message(t.buffer().as_bytes()))).collect() } else { Vec::new() };
        let recvs: Vec<(usize, usize)> = if me == root { Vec::new() } else { vec![(root, size)] };
        let got = self.tx.exchange(&self.info, call, sends, &recvs).map_err(|e| self.spread(e))?;
        if let Some(bytes) = got.first() {
            t.buffer_mut().as_bytes_mut().copy_from_slice(bytes);
        }
        Ok(())
    }

    fn barrier(&self) -> Result<(), CommError> {
        if self.n() == 1 {
            return Ok(());
        }
        self.exchange(Call { op: op::BARRIER, fingerprint: fingerprint(&[6]) }, |_| Vec::new(), |_| 0).map(drop)
    }
}

/// Op, dtype, shape and the arguments every member must share, as one fingerprint.
fn call_fingerprint(op: &'static str, dtype: DType, shape: &[usize], shared: &[usize]) -> u64 {
    let mut parts: Vec<u64> = op.bytes().map(u64::from).collect();
    parts.extend(dtype.name().bytes().map(u64::from));
    parts.push(shape.len() as u64);
    parts.extend(shape.iter().map(|&d| d as u64));
    parts.push(u64::MAX - 1);
    parts.extend(shared.iter().map(|&c| c as u64));
    fingerprint(&parts)
}

/// Byte range of member `j`'s rows when members hold `counts` rows of `rb` bytes each, in
/// member order.
fn segment(counts: &[usize], j: usize, rb: usize) -> std::ops::Range<usize> {
    let first: usize = counts[..j].iter().sum();
    first * rb..(first + counts[j]) * rb
}

/// `dst` = every member's rows, in member order: `own` at `me`, `got[i]` for the others
/// (each of the length the transport checked).
fn concat_in_member_order(mut dst: &mut [u8], me: usize, own: &[u8], got: &[Vec<u8>]) {
    for (i, part) in got.iter().enumerate() {
        let part = if i == me { own } else { part.as_slice() };
        let (here, rest) = dst.split_at_mut(part.len());
        here.copy_from_slice(part);
        dst = rest;
    }
}

/// A copy of `bytes` to send, with room for the transport's trailer.
fn message(bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(bytes.len() + TRAILER_ROOM);
    v.extend_from_slice(bytes);
    v
}

fn row_shape(t: &CpuTensor) -> &[usize] {
    t.shape().get(1..).unwrap_or(&[])
}

fn row_bytes(t: &CpuTensor) -> usize {
    t.row_len() * t.dtype().size_in_bytes()
}

/// An element a reduction adds, read from and written to native-endian bytes.
trait Bytes: Elem {
    fn read(b: &[u8]) -> Self;
    fn write(self, b: &mut [u8]);
}

impl Bytes for f32 {
    fn read(b: &[u8]) -> Self {
        f32::from_ne_bytes([b[0], b[1], b[2], b[3]])
    }
    fn write(self, b: &mut [u8]) {
        b.copy_from_slice(&self.to_ne_bytes());
    }
}

impl Bytes for u32 {
    fn read(b: &[u8]) -> Self {
        u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
    }
    fn write(self, b: &mut [u8]) {
        b.copy_from_slice(&self.to_ne_bytes());
    }
}

/// `dst = parts[0] + parts[1] + …`, element by element, added in member order (the bits
/// the in-process collectives produce). Every part has `dst.len()` bytes (the transport
/// checked each message's length).
fn sum_in_member_order<T: Bytes>(parts: &[&[u8]], dst: &mut [u8]) {
    let size = std::mem::size_of::<T>();
    for (k, out) in dst.chunks_exact_mut(size).enumerate() {
        let at = k * size..(k + 1) * size;
        let mut acc = T::read(&parts[0][at.clone()]);
        for p in &parts[1..] {
            acc = acc.add(T::read(&p[at.clone()]));
        }
        acc.write(out);
    }
}

// Every collective goes through `launch`: run now, and recorded while capturing a graph.
collective_through_launch!(RemoteComm, m);

impl std::fmt::Debug for RemoteComm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteComm").field("info", &self.m.info).finish()
    }
}
