//! A rank's KV cache: per layer and sequence slot, keys `[max_len, n_kv, dk]` and values
//! `[max_len, n_kv, dv]`, preallocated so decode steps allocate nothing.

use crate::backend::{BackendError, DType, Device, Tensor};

pub struct KvCache<B: Device> {
    /// `layers[l][slot] = (k, v)`.
    layers: Vec<Vec<(Tensor<B>, Tensor<B>)>>,
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
            .map(|_| {
                (0..slots)
                    .map(|_| Ok((be.zeros(&[max_len, n_kv, dk], DType::F32)?, be.zeros(&[max_len, n_kv, dv], DType::F32)?)))
                    .collect::<Result<Vec<_>, BackendError>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { layers, max_len })
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    pub fn slots(&self) -> usize {
        self.layers.first().map_or(0, Vec::len)
    }

    pub fn layer_slot(&mut self, layer: usize, slot: usize) -> Option<&mut (Tensor<B>, Tensor<B>)> {
        self.layers.get_mut(layer)?.get_mut(slot)
    }

    /// Resident bytes.
    pub fn bytes(&self) -> usize {
        self.layers.iter().flatten().map(|(k, v)| k.size_in_bytes() + v.size_in_bytes()).sum()
    }
}
