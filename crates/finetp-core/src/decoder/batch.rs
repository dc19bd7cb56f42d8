//! One rank's batch for one step.

use crate::backend::{Device, Tensor};
use crate::parallel::StepCounts;

/// One sequence's rows inside a step batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqInBatch {
    /// KV-cache slot of the sequence.
    pub slot: usize,
    /// First row of the batch that belongs to it.
    pub start: usize,
    /// Its rows this step (prompt length in prefill, 1 in decode).
    pub len: usize,
    /// Tokens already in its cache (the position of its first row).
    pub past: usize,
}

/// This rank's tokens for one step, and the whole DP world's counts.
///
/// `ids` may have more rows than the sequences use (graph mode pads to a static capacity);
/// padded rows belong to no sequence, touch no cache, and their outputs are dropped.
pub struct StepBatch<B: Device> {
    /// u32 `[rows]`.
    pub ids: Tensor<B>,
    /// Position of each row (0 for padding).
    pub positions: Vec<u32>,
    pub seqs: Vec<SeqInBatch>,
    /// Rows whose logits are wanted (the last row of each sequence that samples), padded in
    /// graph mode with row 0 up to the static count.
    pub logit_rows: Vec<usize>,
    /// Token rows of every DP rank this step (what each component's group reads its counts from).
    pub token_counts: StepCounts,
    /// Logit rows of every DP rank this step (the lm_head group's counts).
    pub logit_counts: StepCounts,
}

impl<B: Device> StepBatch<B> {
    pub fn rows(&self) -> usize {
        self.ids.rows()
    }
}
