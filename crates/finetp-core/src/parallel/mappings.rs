//! The only call sites of collectives in the layers. Names say which placement a tensor moves
//! between (Megatron's `mappings`): `Shard(tokens)` = each member holds its own tokens' rows;
//! `Replicated` = every member holds the group's rows; `Partial` = every member holds a partial
//! sum of the group's rows.
//!
//! `counts[i]` is member `i`'s token count this step. Eager mode passes the real, uneven counts
//! (an idle member passes 0 and still calls); graph mode passes a static capacity for everyone.
//! Each helper short-circuits a group of one, so a replicated component costs no copy.

use crate::backend::{Backend, CommError, Collective, Tensor, total_rows};

fn check_counts<B: Backend>(g: &dyn Collective<B>, op: &'static str, counts: &[usize], mine: usize) -> Result<(), CommError> {
    let info = g.info();
    if counts.len() != info.size() || counts[info.rank] != mine {
        return Err(CommError::InvalidArgument {
            group: info.name(),
            op,
            detail: format!("counts {counts:?} for a group of {} where member {} has {mine} rows", info.size(), info.rank),
        });
    }
    Ok(())
}

fn with_rows<B: Backend>(be: &B, like: &Tensor<B>, rows: usize) -> Result<Tensor<B>, CommError> {
    let mut shape = like.shape().to_vec();
    if shape.is_empty() {
        shape.push(rows);
    } else {
        shape[0] = rows;
    }
    Ok(be.zeros(&shape, like.dtype())?)
}

/// `Shard(tokens) → Replicated`: `[counts[me], ...]` → `[Σcounts, ...]` in member order.
/// Moves `(Σcounts − counts[me]) · row` elements into each member.
pub fn gather_tokens<B: Backend>(be: &B, g: &dyn Collective<B>, mine: Tensor<B>, counts: &[usize]) -> Result<Tensor<B>, CommError> {
    check_counts(g, "gather_tokens", counts, mine.rows())?;
    if g.info().size() == 1 {
        return Ok(mine);
    }
    let mut out = with_rows(be, &mine, total_rows(counts))?;
    g.all_gather(&mine, counts, &mut out)?;
    Ok(out)
}

/// `Partial → Shard(tokens)`: sums `[Σcounts, ...]` over the group and keeps this member's
/// rows. Cheaper than all-reduce + slice: each member receives only its own rows' partials.
pub fn reduce_scatter_tokens<B: Backend>(be: &B, g: &dyn Collective<B>, partial: Tensor<B>, counts: &[usize]) -> Result<Tensor<B>, CommError> {
    let info = g.info();
    if partial.rows() != total_rows(counts) {
        return Err(CommError::InvalidArgument {
            group: info.name(),
            op: "reduce_scatter_tokens",
            detail: format!("{} rows for counts {counts:?}", partial.rows()),
        });
    }
    if info.size() == 1 {
        return Ok(partial);
    }
    let mut out = with_rows(be, &partial, counts[info.rank])?;
    g.reduce_scatter_sum(&partial, counts, &mut out)?;
    Ok(out)
}

/// Personalised exchange: `send` holds `send_counts[j]` rows for member `j`; returns the
/// `recv_counts[i]` rows from each member `i`, in member order.
pub fn exchange<B: Backend>(
    be: &B,
    g: &dyn Collective<B>,
    send: Tensor<B>,
    send_counts: &[usize],
    recv_counts: &[usize],
) -> Result<Tensor<B>, CommError> {
    if g.info().size() == 1 {
        return Ok(send);
    }
    let mut out = with_rows(be, &send, total_rows(recv_counts))?;
    g.all_to_all(&send, send_counts, recv_counts, &mut out)?;
    Ok(out)
}
