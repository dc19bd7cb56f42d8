//! Argument checks: each member's own arguments (before it arrives), and the members' posts
//! against each other (by the last member to arrive). Both return a message, never panic:
//! a bad call becomes `InvalidArgument` on its caller and `Mismatch` on its peers.

use finetp_core::backend::Tensor;
use finetp_core::backend::checks::collective;

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

/// The rules of core's [`collective`] checks, and the storage behind each tensor.
pub(super) fn all_reduce(t: &T) -> Result<(), String> {
    storage("t", t)?;
    collective::all_reduce(t)
}

pub(super) fn all_gather(mine: &T, counts: &[usize], out: &T, me: usize, n: usize) -> Result<(), String> {
    storage("mine", mine)?;
    storage("out", out)?;
    collective::all_gather(mine, counts, out, me, n)
}

pub(super) fn reduce_scatter(all: &T, counts: &[usize], out: &T, me: usize, n: usize) -> Result<(), String> {
    storage("all", all)?;
    storage("out", out)?;
    collective::reduce_scatter(all, counts, out, me, n)
}

pub(super) fn all_to_all(send: &T, send_counts: &[usize], recv_counts: &[usize], out: &T, n: usize) -> Result<(), String> {
    storage("send", send)?;
    storage("out", out)?;
    collective::all_to_all(send, send_counts, recv_counts, out, n)
}

pub(super) fn broadcast(t: &T, root: usize, n: usize) -> Result<(), String> {
    storage("t", t)?;
    collective::broadcast(root, n)
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
