//! Collectives over one planned group.

use super::{Backend, CommError, GroupSpec, Tensor};

/// A communicator for one group, held by one member (one per rank, like an NCCL `ncclComm_t`).
///
/// All movement is along the first dimension (rows); `counts[i]` is the number of rows member
/// `i` contributes or receives, so uneven token counts and idle members (`0` rows) are
/// first-class. Every member must call the same collectives in the same order with consistent
/// counts (the lock-step invariant); violations are reported as [`CommError::Mismatch`] where
/// the implementation can see them. Every call fails with [`CommError::Timeout`] or
/// [`CommError::PeerFailed`] rather than hang.
pub trait Collective<B: Backend>: Send + Sync {
    /// The group this communicator was made for.
    fn info(&self) -> &GroupSpec;

    /// Element-wise sum over all members, result on every member. f32 or u32.
    fn all_reduce_sum(&self, t: &mut Tensor<B>) -> Result<(), CommError>;

    /// Concatenates each member's rows in member order: `mine [counts[me], ...]` →
    /// `out [sum(counts), ...]` on every member.
    fn all_gather(&self, mine: &Tensor<B>, counts: &[usize], out: &mut Tensor<B>) -> Result<(), CommError>;

    /// Sums `all [sum(counts), ...]` over members and gives member `i` rows
    /// `offset(i)..offset(i) + counts[i]` of the sum in `out [counts[me], ...]`. f32.
    fn reduce_scatter_sum(&self, all: &Tensor<B>, counts: &[usize], out: &mut Tensor<B>) -> Result<(), CommError>;

    /// Personalised exchange: `send` holds `send_counts[j]` rows for member `j`, in member
    /// order; `out` receives `recv_counts[i]` rows from member `i`, in member order.
    /// `recv_counts[i]` must equal member `i`'s `send_counts[me]`.
    fn all_to_all(
        &self,
        send: &Tensor<B>,
        send_counts: &[usize],
        recv_counts: &[usize],
        out: &mut Tensor<B>,
    ) -> Result<(), CommError>;

    /// Copies `root`'s tensor into every member's `t` (same shape everywhere).
    fn broadcast(&self, t: &mut Tensor<B>, root: usize) -> Result<(), CommError>;

    /// Returns once every member has called it.
    fn barrier(&self) -> Result<(), CommError>;
}

/// Sum of row counts, i.e. the size of a gathered tensor's first dimension.
pub fn total_rows(counts: &[usize]) -> usize {
    counts.iter().sum()
}
