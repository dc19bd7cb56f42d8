//! The four components that fine-grained TP shards.

use std::fmt;

/// A module class with its own fine-grained TP size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    Embedding,
    LmHead,
    OProj,
    Mlp,
}

impl Component {
    /// All four, in the order the config keys are documented.
    pub const ALL: [Component; 4] = [Component::Embedding, Component::LmHead, Component::OProj, Component::Mlp];

    /// The `finegrained_tp_config` key that sets this component's size (vLLM-Ascend's names).
    pub const fn config_key(self) -> &'static str {
        match self {
            Component::Embedding => "embedding_tensor_parallel_size",
            Component::LmHead => "lmhead_tensor_parallel_size",
            Component::OProj => "oproj_tensor_parallel_size",
            Component::Mlp => "mlp_tensor_parallel_size",
        }
    }

    /// Short name used in tables and group names.
    pub const fn name(self) -> &'static str {
        match self {
            Component::Embedding => "embedding",
            Component::LmHead => "lm_head",
            Component::OProj => "o_proj",
            Component::Mlp => "mlp",
        }
    }

    pub fn from_config_key(key: &str) -> Option<Component> {
        Component::ALL.into_iter().find(|c| c.config_key() == key)
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
