//! A rank's KV cache: per layer, keys `[slots, max_len, n_kv, dk]` and values
//! `[slots, max_len, n_kv, dv]`, preallocated so decode steps allocate nothing and a captured
//! step always addresses the same buffers.

use crate::backend::{BackendError, DType, Device, Tensor};

pub struct KvCache<B: Device> {
    /// `layers[l] = (k, v)`.
    layers: Vec<(Tensor<B>, Tensor<B>)>,
    slots: usize,
    max_len: usize,
}

impl<B: Device> KvCache<B> {
    pub fn new(
        be: &B,
        n_layers: usize,
        slots: usize,
        max_len: usize,
        (n_kv, dk): (usize, usize),
        dv: usize,
    ) -> Result<Self, BackendError> {
        let layers = (0..n_layers)
            .map(|_| Ok((be.zeros(&[slots, max_len, n_kv, dk], DType::F32)?, be.zeros(&[slots, max_len, n_kv, dv], DType::F32)?)))
            .collect::<Result<Vec<_>, BackendError>>()?;
        Ok(Self { layers, slots, max_len })
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    pub fn slots(&self) -> usize {
        self.slots
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
