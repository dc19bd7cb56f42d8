//! A rank's communicators, one per component plus its data-parallel group.

use std::sync::Arc;

use crate::backend::{Backend, Collective};
use crate::config::Component;

/// One rank's communicator for each fine-grained component and for its DP group, after
/// Megatron's `ProcessGroupCollection`. Groups of size 1 are real (trivial) communicators, so
/// layers never special-case "no TP".
pub struct GroupSet<B: Backend> {
    pub embedding: Arc<dyn Collective<B>>,
    pub lm_head: Arc<dyn Collective<B>>,
    pub o_proj: Arc<dyn Collective<B>>,
    pub mlp: Arc<dyn Collective<B>>,
    /// All DP replicas at this rank's (pp, tp) position: per-step metadata goes here.
    pub dp: Arc<dyn Collective<B>>,
}

impl<B: Backend> GroupSet<B> {
    pub fn get(&self, c: Component) -> &Arc<dyn Collective<B>> {
        match c {
            Component::Embedding => &self.embedding,
            Component::LmHead => &self.lm_head,
            Component::OProj => &self.o_proj,
            Component::Mlp => &self.mlp,
        }
    }
}

impl<B: Backend> Clone for GroupSet<B> {
    fn clone(&self) -> Self {
        Self {
            embedding: self.embedding.clone(),
            lm_head: self.lm_head.clone(),
            o_proj: self.o_proj.clone(),
            mlp: self.mlp.clone(),
            dp: self.dp.clone(),
        }
    }
}
