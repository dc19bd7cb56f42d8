//! A rank's KV cache: per layer, a pool of key blocks `[blocks, block_size, n_kv, dk]` and value
//! blocks `[blocks, block_size, n_kv, dv]` in the backend's activation dtype, preallocated so
//! decode steps allocate nothing and a captured step always addresses the same buffers. Which
//! blocks hold which sequence is the step's block table ([`KvIndex`](crate::backend::KvIndex)).

use crate::backend::{BackendError, Device, Tensor};

/// Rows per KV-cache block (vLLM's default).
pub const KV_BLOCK_SIZE: usize = 16;

/// How many blocks a cache has, of how many rows, and how they are handed to sequence slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLayout {
    pub blocks: usize,
    pub block_size: usize,
    /// Sequence slots and blocks per slot of the block table.
    pub slots: usize,
    pub max_blocks: usize,
}

impl KvLayout {
    /// `slots` sequences of up to `max_len` tokens, each with its own blocks for its whole
    /// length (slot `s` owns blocks `s·mb .. (s+1)·mb`): what an offline run of known requests
    /// needs. `None` when the sizes overflow.
    pub fn reserved(slots: usize, max_len: usize, block_size: usize) -> Option<Self> {
        let block_size = block_size.max(1);
        let max_blocks = max_len.max(1).div_ceil(block_size);
        let slots = slots.max(1);
        Some(Self { blocks: slots.checked_mul(max_blocks)?, block_size, slots, max_blocks })
    }

    /// The block table of a reserved layout, `[slots, max_blocks]` row-major.
    pub fn reserved_table(&self) -> Vec<u32> {
        (0..self.slots * self.max_blocks).map(|b| b as u32).collect()
    }

    /// Rows each sequence slot can hold.
    pub fn max_len(&self) -> usize {
        self.max_blocks * self.block_size
    }
}

pub struct KvCache<B: Device> {
    /// `layers[l] = (k, v)`.
    layers: Vec<(Tensor<B>, Tensor<B>)>,
    layout: KvLayout,
}

impl<B: Device> KvCache<B> {
    /// `n_layers` pools of `layout.blocks` blocks, keys of `n_kv × dk` and values of `n_kv × dv`
    /// per row.
    pub fn new(be: &B, n_layers: usize, layout: KvLayout, (n_kv, dk): (usize, usize), dv: usize) -> Result<Self, BackendError> {
        let (nb, bs, dt) = (layout.blocks, layout.block_size, be.activation_dtype());
        let layers = (0..n_layers)
            .map(|_| Ok((be.zeros(&[nb, bs, n_kv, dk], dt)?, be.zeros(&[nb, bs, n_kv, dv], dt)?)))
            .collect::<Result<Vec<_>, BackendError>>()?;
        Ok(Self { layers, layout })
    }

    /// MLA's latent cache: per layer one pool `[blocks, bs, 1, d]` of each token's compressed
    /// latent and rope key (`d = kv_lora_rank + qk_rope_head_dim`), shared by every head; the
    /// values are the latent itself, so each layer's value pool is empty (`[.., 1, 0]`).
    pub fn latent(be: &B, n_layers: usize, layout: KvLayout, d: usize) -> Result<Self, BackendError> {
        Self::new(be, n_layers, layout, (1, d), 0)
    }

    pub fn layout(&self) -> KvLayout {
        self.layout
    }

    /// Keys and values of `layer`.
    pub fn layer_mut(&mut self, layer: usize) -> Option<(&mut Tensor<B>, &mut Tensor<B>)> {
        self.layers.get_mut(layer).map(|(k, v)| (k, v))
    }

    /// Resident bytes.
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(|(k, v)| k.size_in_bytes() + v.size_in_bytes()).sum()
    }
}
