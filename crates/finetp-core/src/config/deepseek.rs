//! DeepSeek-V2/V3's extra shapes: multi-head latent attention and the mixture of experts with
//! its routing rule, read from HF's field names with HF's defaults per architecture (a field a
//! `config.json` leaves out means what `DeepseekV2Config` / `DeepseekV3Config` default it to).

use super::fields::Fields;
use super::{Architecture, ModelConfigError};

/// Multi-head latent attention shapes (DeepSeek V2/V3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct MlaConfig {
    /// `None`: queries use a plain `q_proj` (no low-rank down-projection).
    pub q_lora_rank: Option<usize>,
    pub kv_lora_rank: usize,
    pub qk_nope_head_dim: usize,
    pub qk_rope_head_dim: usize,
    pub v_head_dim: usize,
    /// RoPE rotates adjacent pairs of the rope part (DeepSeek's own layout; `rope_interleave`,
    /// HF's default) rather than its two halves (NeoX style, `rope_interleave: false`).
    pub rope_interleave: bool,
}

/// How router logits become expert scores (`scoring_func`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MoeScoring {
    Softmax,
    Sigmoid,
}

/// How experts are picked from the scores (`topk_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TopkMethod {
    /// The `k` best scores (DeepSeek-V2-Lite).
    Greedy,
    /// The `k` best within the `topk_group` groups whose best score is highest (DeepSeek-V2).
    GroupLimitedGreedy,
    /// Choice by score + `e_score_correction_bias`, within the `topk_group` groups whose top-2
    /// sum is highest; weights from the plain scores (DeepSeek-V3/R1).
    NoauxTc,
}

/// Mixture-of-experts shapes and routing (DeepSeek V2/V3).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct MoeConfig {
    pub n_routed_experts: usize,
    pub n_shared_experts: usize,
    pub moe_intermediate_size: usize,
    pub num_experts_per_tok: usize,
    /// Layers `0..first_k_dense_replace` are dense.
    pub first_k_dense_replace: usize,
    pub moe_layer_freq: usize,
    pub scoring: MoeScoring,
    pub topk_method: TopkMethod,
    /// Expert groups (`n_group`); routed experts split evenly among them.
    pub n_group: usize,
    /// Groups a token may pick experts from (`topk_group`).
    pub topk_group: usize,
    /// Multiplies the routed experts' weights (`routed_scaling_factor`).
    pub routed_scaling_factor: f64,
    /// Normalise the chosen experts' weights to sum to 1 (`norm_topk_prob`; always false for
    /// DeepSeek-V2, whose HF implementation ignores the field).
    pub norm_topk_prob: bool,
}

pub(super) fn mla(f: &Fields<'_>) -> Result<MlaConfig, ModelConfigError> {
    Ok(MlaConfig {
        q_lora_rank: f.opt_usize("q_lora_rank")?,
        kv_lora_rank: f.usize("kv_lora_rank")?,
        qk_nope_head_dim: f.usize("qk_nope_head_dim")?,
        qk_rope_head_dim: f.usize("qk_rope_head_dim")?,
        v_head_dim: f.usize("v_head_dim")?,
        rope_interleave: f.opt_bool("rope_interleave")?.unwrap_or(true),
    })
}

/// The MoE config, if the model has routed experts.
pub(super) fn moe(f: &Fields<'_>, arch: Architecture) -> Result<Option<MoeConfig>, ModelConfigError> {
    let Some(n) = f.opt_usize("n_routed_experts")?.filter(|&n| n > 0) else {
        return Ok(None);
    };
    let v3 = arch == Architecture::DeepseekV3;
    let scoring = match f.opt_string("scoring_func")?.as_deref() {
        None if v3 => MoeScoring::Sigmoid,
        None | Some("softmax") => MoeScoring::Softmax,
        Some("sigmoid") => MoeScoring::Sigmoid,
        Some(other) => return Err(ModelConfigError::Field { field: "scoring_func", detail: format!("\"{other}\" (supported: softmax, sigmoid)") }),
    };
    let topk_method = match f.opt_string("topk_method")?.as_deref() {
        None if v3 => TopkMethod::NoauxTc,
        None | Some("greedy") => TopkMethod::Greedy,
        Some("group_limited_greedy") => TopkMethod::GroupLimitedGreedy,
        Some("noaux_tc") => TopkMethod::NoauxTc,
        Some(other) => {
            return Err(ModelConfigError::Field { field: "topk_method", detail: format!("\"{other}\" (supported: greedy, group_limited_greedy, noaux_tc)") });
        }
    };
    let grouped = topk_method != TopkMethod::Greedy;
    let n_group = f.opt_usize("n_group")?.unwrap_or(if v3 { 8 } else { 1 }).max(1);
    let topk_group = f.opt_usize("topk_group")?.unwrap_or(if v3 { 4 } else { 1 }).max(1);
    let cfg = MoeConfig {
        n_routed_experts: n,
        n_shared_experts: f.opt_usize("n_shared_experts")?.unwrap_or(0),
        moe_intermediate_size: f.usize("moe_intermediate_size")?,
        num_experts_per_tok: f.opt_usize("num_experts_per_tok")?.unwrap_or(1),
        first_k_dense_replace: f.opt_usize("first_k_dense_replace")?.unwrap_or(0),
        moe_layer_freq: f.opt_usize("moe_layer_freq")?.unwrap_or(1).max(1),
        scoring,
        topk_method,
        n_group: if grouped { n_group } else { 1 },
        topk_group: if grouped { topk_group } else { 1 },
        routed_scaling_factor: f.opt_f64("routed_scaling_factor")?.unwrap_or(if v3 { 2.5 } else { 1.0 }),
        // HF transformers' DeepSeek-V2 never normalises (its config field is unused there).
        norm_topk_prob: v3 && f.opt_bool("norm_topk_prob")?.unwrap_or(true),
    };
    if !cfg.n_routed_experts.is_multiple_of(cfg.n_group) {
        return Err(ModelConfigError::Field {
            field: "n_group",
            detail: format!("{} does not divide n_routed_experts {}", cfg.n_group, cfg.n_routed_experts),
        });
    }
    if cfg.topk_group > cfg.n_group {
        return Err(ModelConfigError::Field { field: "topk_group", detail: format!("{} exceeds n_group {}", cfg.topk_group, cfg.n_group) });
    }
    let reachable = cfg.topk_group * (cfg.n_routed_experts / cfg.n_group);
    if cfg.num_experts_per_tok == 0 || cfg.num_experts_per_tok > reachable {
        return Err(ModelConfigError::Field {
            field: "num_experts_per_tok",
            detail: format!("{} experts per token, but {reachable} are reachable (topk_group x experts per group)", cfg.num_experts_per_tok),
        });
    }
    Ok(Some(cfg))
}
