//! One rank's batch for one step: host-built inputs, and their device tensors.

use crate::backend::{BackendError, Device, HostTensor, KvIndex, PAD_SLOT, SampleParams, Tensor};
use crate::parallel::StepCounts;

/// A step's per-row inputs on the host, before upload.
///
/// Rows of several sequences are concatenated; each row carries its token id, position and
/// KV-cache slot, so attention needs no host-side loop over sequences (and a decode step can be
/// captured as a graph). Padding rows (graph mode's static capacity) have slot [`PAD_SLOT`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepInputs {
    pub ids: Vec<u32>,
    pub positions: Vec<u32>,
    pub slots: Vec<u32>,
    /// Rows whose logits are wanted: the last row of each sequence.
    pub logit_rows: Vec<u32>,
    /// How to pick the next token of each logit row.
    pub sampling: Vec<SampleParams>,
    /// The KV cache's block table, `[slots, max_blocks]` row-major (see
    /// [`KvIndex`]): which cache blocks hold each sequence slot's positions.
    pub block_table: Vec<u32>,
    pub max_blocks: usize,
}

impl StepInputs {
    /// Empty inputs over a cache whose block table is `block_table` (`[slots, max_blocks]`).
    pub fn new(block_table: Vec<u32>, max_blocks: usize) -> Self {
        Self { block_table, max_blocks, ..Self::default() }
    }

    /// Appends `tokens` of the sequence in `slot` whose cache already holds `past` tokens; with
    /// `sampling`, asks for the logits of its last row, to be sampled so (a chunk of a prompt
    /// that does not end it asks for none).
    pub fn push_sequence(&mut self, slot: usize, tokens: &[u32], past: usize, sampling: Option<SampleParams>) {
        let start = self.ids.len();
        self.ids.extend_from_slice(tokens);
        self.positions.extend((past..past + tokens.len()).map(|p| p as u32));
        self.slots.extend(std::iter::repeat_n(slot as u32, tokens.len()));
        if let (false, Some(sampling)) = (tokens.is_empty(), sampling) {
            self.logit_rows.push((start + tokens.len() - 1) as u32);
            self.sampling.push(sampling);
        }
    }

    /// As [`push_sequence`](Self::push_sequence), asking for the logits of every row (a
    /// prompt's log-probabilities): rows before the last are sampled greedily (their samples
    /// are not used), the last with `sampling` when given, else greedily too.
    pub fn push_sequence_all_logits(&mut self, slot: usize, tokens: &[u32], past: usize, sampling: Option<SampleParams>) {
        let start = self.ids.len();
        self.push_sequence(slot, tokens, past, None);
        for r in 0..tokens.len() {
            self.logit_rows.push((start + r) as u32);
            self.sampling.push(if r + 1 == tokens.len() { sampling.unwrap_or(SampleParams::GREEDY) } else { SampleParams::GREEDY });
        }
    }

    /// Pads to `rows` token rows and `logit_rows` logit rows (graph mode's static shapes):
    /// padding rows touch no cache; padded logit rows repeat row 0 and are sampled greedily,
    /// and their tokens are dropped by the caller.
    pub fn pad_to(&mut self, rows: usize, logit_rows: usize) {
        self.ids.resize(rows.max(self.ids.len()), 0);
        self.positions.resize(self.ids.len(), 0);
        self.slots.resize(self.ids.len(), PAD_SLOT);
        self.logit_rows.resize(logit_rows.max(self.logit_rows.len()), 0);
        self.sampling.resize(self.logit_rows.len(), SampleParams::GREEDY);
    }

    pub fn rows(&self) -> usize {
        self.ids.len()
    }

    fn host(&self) -> Result<[HostTensor; 6], BackendError> {
        let n = self.ids.len();
        if self.sampling.len() != self.logit_rows.len() {
            return Err(BackendError::Shape(format!("step inputs: {} logit rows, {} sampling rows", self.logit_rows.len(), self.sampling.len())));
        }
        let mb = self.max_blocks.max(1);
        if !self.block_table.len().is_multiple_of(mb) || self.block_table.is_empty() {
            return Err(BackendError::Shape(format!("step inputs: a block table of {} ids is not [slots, {mb}]", self.block_table.len())));
        }
        if self.positions.len() != n || self.slots.len() != n {
            return Err(BackendError::Shape(format!(
                "step inputs: {n} ids, {} positions, {} slots",
                self.positions.len(),
                self.slots.len()
            )));
        }
        if let Some(r) = self.logit_rows.iter().find(|&&r| r as usize >= n.max(1)) {
            return Err(BackendError::Shape(format!("step inputs: logit row {r} of {n} rows")));
        }
        Ok([
            HostTensor::u32(self.ids.clone(), &[n])?,
            HostTensor::u32(self.positions.clone(), &[n])?,
            HostTensor::u32(self.slots.clone(), &[n])?,
            HostTensor::u32(self.logit_rows.clone(), &[self.logit_rows.len()])?,
            HostTensor::u32(self.block_table.clone(), &[self.block_table.len() / mb, mb])?,
            SampleParams::tensor(&self.sampling),
        ])
    }
}

/// This rank's tokens for one step on the device, and the whole DP world's counts.
///
/// `ids` may have more rows than the sequences use (graph mode pads to a static capacity);
/// padded rows belong to no sequence, touch no cache, and their outputs are dropped.
pub struct StepBatch<B: Device> {
    /// u32 `[rows]`.
    pub ids: Tensor<B>,
    /// u32 `[rows]`: each row's position in its sequence.
    pub positions: Tensor<B>,
    /// u32 `[rows]`: each row's KV-cache slot, [`PAD_SLOT`] for padding.
    pub slots: Tensor<B>,
    /// u32 `[M]`: rows whose logits are wanted, one per sampling sequence (graph mode pads
    /// them with row 0 up to the static count).
    pub logit_rows: Tensor<B>,
    /// u32 `[slots, max_blocks]`: the KV cache's block table.
    pub block_table: Tensor<B>,
    /// f32 `[M, 4]`: how each logit row's token is picked ([`SampleParams`]).
    pub sample_params: Tensor<B>,
    /// Token rows of every DP rank this step (what each component's group reads its counts from).
    pub token_counts: StepCounts,
    /// Logit rows of every DP rank this step (the lm_head group's counts).
    pub logit_counts: StepCounts,
}

impl<B: Device> StepBatch<B> {
    /// Uploads `inputs` into fresh device tensors.
    pub fn upload(be: &B, inputs: &StepInputs, token_counts: StepCounts, logit_counts: StepCounts) -> Result<Self, BackendError> {
        let [ids, positions, slots, logit_rows, block_table, sample_params] = inputs.host()?;
        Ok(Self {
            ids: be.upload(&ids)?,
            positions: be.upload(&positions)?,
            slots: be.upload(&slots)?,
            logit_rows: be.upload(&logit_rows)?,
            block_table: be.upload(&block_table)?,
            sample_params: be.upload(&sample_params)?,
            token_counts,
            logit_counts,
        })
    }

    /// Rewrites the tensors in place with a new step's inputs of the same shapes (the inputs of
    /// a captured graph).
    pub fn write(&mut self, be: &B, inputs: &StepInputs) -> Result<(), BackendError> {
        let [ids, positions, slots, logit_rows, block_table, sample_params] = inputs.host()?;
        be.write(&mut self.ids, &ids)?;
        be.write(&mut self.positions, &positions)?;
        be.write(&mut self.slots, &slots)?;
        be.write(&mut self.logit_rows, &logit_rows)?;
        be.write(&mut self.block_table, &block_table)?;
        be.write(&mut self.sample_params, &sample_params)
    }

    pub fn rows(&self) -> usize {
        self.ids.rows()
    }

    /// Number of logit rows the forward returns.
    pub fn logit_rows_len(&self) -> usize {
        self.logit_rows.rows()
    }

    /// Where this step's rows live in the KV cache.
    pub fn kv_index(&self) -> KvIndex<'_, B> {
        KvIndex { block_table: &self.block_table, slots: &self.slots, positions: &self.positions }
    }
}
