//! A rank's communicators, one per component plus its data-parallel and tensor-parallel groups.

use std::sync::Arc;

use crate::backend::{Backend, Collective, CommError, GroupRole, GroupSpec, Rendezvous};
use crate::config::Component;
use crate::layers::LayerGroups;

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
    /// This replica's TP ranks (this pipeline stage): standard tensor parallelism.
    pub tp: Arc<dyn Collective<B>>,
    /// The expert-parallel group (`--enable-expert-parallel`): routed experts are sharded over
    /// it and tokens dispatched to their experts' ranks; `None`: every rank holds every expert.
    /// Today the DP world at TP 1 (EP = DP × TP = DP), see [`GroupSet::with_expert_parallel`].
    pub ep: Option<Arc<dyn Collective<B>>>,
}

impl<B: Backend> GroupSet<B> {
    /// Makes this rank's communicators on `be` from its planned groups
    /// ([`Plan::group_specs`](crate::plan::Plan::group_specs)), one [`Backend::connect`] per
    /// group, in the order given (which must be [`GroupRole::PLANNED`]: every rank connects in
    /// the same order).
    ///
    /// # Errors
    /// [`CommError::InvalidArgument`] when `specs` are not the planned roles in order; otherwise
    /// whatever the backend's `connect` fails with (a peer that never arrives, a library error).
    pub fn connect(be: &B, specs: &[GroupSpec], rv: &dyn Rendezvous) -> Result<Self, CommError> {
        let roles: Vec<GroupRole> = specs.iter().map(|s| s.role).collect();
        if roles != GroupRole::PLANNED {
            return Err(CommError::InvalidArgument {
                group: "group set".into(),
                op: "connect",
                detail: format!("groups {roles:?} are not the planned {:?}", GroupRole::PLANNED),
            });
        }
        let mut comms = Vec::with_capacity(specs.len());
        for spec in specs {
            comms.push(be.connect(spec, rv)?);
        }
        let mut it = comms.into_iter();
        let mut next = || it.next().expect("six planned groups");
        Ok(Self { embedding: next(), lm_head: next(), o_proj: next(), mlp: next(), dp: next(), tp: next(), ep: None })
    }

    /// Turns expert parallelism on as `plan` asks: with `--enable-expert-parallel` the EP world
    /// is DP × TP, which at TP 1 is this rank's DP group (the plan's validation refuses TP > 1
    /// with EP until a DP × TP group exists).
    pub fn with_expert_parallel(mut self, plan: &crate::plan::Plan) -> Self {
        let p = &plan.parallel;
        self.ep = (p.enable_expert_parallel && p.tensor_parallel_size == 1 && p.data_parallel_size > 1).then(|| self.dp.clone());
        self
    }

    /// The groups component `c`'s layer spans: its fine-grained group and this replica's TP
    /// group.
    pub fn layer(&self, c: Component) -> LayerGroups<B> {
        LayerGroups::new(self.get(c).clone(), self.tp.clone())
    }

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
            tp: self.tp.clone(),
            ep: self.ep.clone(),
        }
    }
}
