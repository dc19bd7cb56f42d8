//! Argument checks: each member's own arguments (before it arrives), and the members' posts
//! against each other (by the last member to arrive). Both return a message, never panic:
//! a bad call becomes `InvalidArgument` on its caller and `Mismatch` on its peers.

use finetp_core::backend::{DType, Tensor};

use super::post::Post;
use crate::CpuBackend;

/// Op names, as they appear in errors.
pub(super) mod op {
    pub const ALL_REDUCE: &str = "all_reduce_sum";
    pub const ALL_GATHER: &str = "all_gather";
    pub const REDUCE_SCATTER: &str = "reduce_scatter_sum";
    pub const ALL_TO_ALL: &str = "all_to_all";
    pub const BROADCAST: &str = "broadcast";
    pub const BARRIER: &str = "barrier";
}

type T = Tensor<CpuBackend>;

/// The storage really holds `numel` elements of the tensor's dtype: collectives read and write
/// through raw pointers, so a tensor whose shape overstates its buffer must be refused.
fn storage(what: &str, t: &T) -> Result<(), String> {
    let buf = t.buffer();
    if buf.dtype() != t.dtype() || buf.len() != t.numel() {
        return Err(format!(
            "{what}: tensor {:?} {} is backed by {} {} elements",
            t.shape(),
            t.dtype(),
            buf.len(),
            buf.dtype()
        ));
    }
    Ok(())
}

fn has_rows(what: &str, t: &T) -> Result<(), String> {
    if t.shape().is_empty() {
        return Err(format!("{what} is a scalar; collectives move rows (the first dimension)"));
    }
    Ok(())
}

fn counts_len(what: &str, counts: &[usize], n: usize) -> Result<usize, String> {
    if counts.len() != n {
        return Err(format!("{what} has {} entries for a group of {n}", counts.len()));
    }
    counts.iter().try_fold(0usize, |a, &c| a.checked_add(c)).ok_or_else(|| format!("{what} {counts:?} overflows"))
}

/// `a` and `b` have the same dtype and row shape (all dims but the first).
fn same_rows(a_what: &str, a: &T, b_what: &str, b: &T) -> Result<(), String> {
    if a.dtype() != b.dtype() {
        return Err(format!("{a_what} is {} but {b_what} is {}", a.dtype(), b.dtype()));
    }
    if a.shape().get(1..) != b.shape().get(1..) {
        return Err(format!("{a_what} {:?} and {b_what} {:?} have different rows", a.shape(), b.shape()));
    }
    Ok(())
}

fn rows(what: &str, t: &T, want: usize, why: &str) -> Result<(), String> {
    if t.rows() != want {
        return Err(format!("{what} {:?} has {} rows, expected {want} ({why})", t.shape(), t.rows()));
    }
    Ok(())
}

pub(super) fn all_reduce(t: &T) -> Result<(), String> {
    storage("t", t)?;
    match t.dtype() {
        DType::F32 | DType::U32 => Ok(()),
        other => Err(format!("all_reduce_sum sums f32 or u32, got {other}")),
    }
}

pub(super) fn all_gather(mine: &T, counts: &[usize], out: &T, me: usize, n: usize) -> Result<(), String> {
    let total = counts_len("counts", counts, n)?;
    has_rows("mine", mine)?;
    has_rows("out", out)?;
    storage("mine", mine)?;
    storage("out", out)?;
    same_rows("mine", mine, "out", out)?;
    rows("mine", mine, counts[me], "counts[me]")?;
    rows("out", out, total, "sum(counts)")
}

pub(super) fn reduce_scatter(all: &T, counts: &[usize], out: &T, me: usize, n: usize) -> Result<(), String> {
    let total = counts_len("counts", counts, n)?;
    has_rows("all", all)?;
    has_rows("out", out)?;
    storage("all", all)?;
    storage("out", out)?;
    if all.dtype() != DType::F32 {
        return Err(format!("reduce_scatter_sum sums f32, got {}", all.dtype()));
    }
    same_rows("all", all, "out", out)?;
    rows("all", all, total, "sum(counts)")?;
    rows("out", out, counts[me], "counts[me]")
}

pub(super) fn all_to_all(
    send: &T,
    send_counts: &[usize],
    recv_counts: &[usize],
    out: &T,
    n: usize,
) -> Result<(), String> {
    let sent = counts_len("send_counts", send_counts, n)?;
    let received = counts_len("recv_counts", recv_counts, n)?;
    has_rows("send", send)?;
    has_rows("out", out)?;
    storage("send", send)?;
    storage("out", out)?;
    same_rows("send", send, "out", out)?;
    rows("send", send, sent, "sum(send_counts)")?;
    rows("out", out, received, "sum(recv_counts)")
}

pub(super) fn broadcast(t: &T, root: usize, n: usize) -> Result<(), String> {
    storage("t", t)?;
    if root >= n {
        return Err(format!("root {root} is not a member of a group of {n}"));
    }
    Ok(())
}

/// Checks every member's post against member 0's (and, for `all_to_all`, the send/receive
/// matrix). `None` when the round may proceed.
pub(super) fn cross(posts: &[Post], ranks: &[usize]) -> Option<String> {
    let who = |i: usize| format!("member {i} (global rank {})", ranks.get(i).copied().unwrap_or(usize::MAX));
    let first = posts.first()?;
    if let Some((i, p)) = posts.iter().enumerate().find(|(_, p)| p.op != first.op) {
        return Some(format!("{} called {} but {} called {}", who(0), first.op, who(i), p.op));
    }
    if let Some((i, p)) = posts.iter().enumerate().find(|(_, p)| p.invalid.is_some()) {
        return Some(format!("{} passed bad arguments: {}", who(i), p.invalid.as_deref().unwrap_or("")));
    }
    for (i, p) in posts.iter().enumerate().skip(1) {
        if p.dtype != first.dtype {
            return Some(format!("{} has dtype {:?} but {} has {:?}", who(0), first.dtype, who(i), p.dtype));
        }
        if p.shape != first.shape {
            let what = if matches!(first.op, op::ALL_REDUCE | op::BROADCAST) { "shape" } else { "row shape" };
            return Some(format!("{} has {what} {:?} but {} has {:?}", who(0), first.shape, who(i), p.shape));
        }
        if matches!(first.op, op::ALL_GATHER | op::REDUCE_SCATTER) && p.counts != first.counts {
            return Some(format!("{} has counts {:?} but {} has {:?}", who(0), first.counts, who(i), p.counts));
        }
        if first.op == op::BROADCAST && p.root != first.root {
            return Some(format!("{} broadcasts from {} but {} from {}", who(0), first.root, who(i), p.root));
        }
    }
    if first.op == op::ALL_TO_ALL {
        for (i, p) in posts.iter().enumerate() {
            for (j, q) in posts.iter().enumerate() {
                let (expects, sent) = (p.recv_counts.get(j), q.counts.get(i));
                if expects != sent {
                    return Some(format!(
                        "{} expects {expects:?} rows from {}, which sends it {sent:?}",
                        who(i),
                        who(j)
                    ));
                }
            }
        }
    }
    None
}
