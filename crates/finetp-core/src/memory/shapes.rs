//! Weight shapes of one decoder layer, derived from the model config.

use crate::config::{ModelConfig, ParallelConfig};

use super::WeightFormat;

/// A linear weight `[out, in]` (HF layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct LinearShape {
    pub out: usize,
    pub inp: usize,
}

const fn lin(out: usize, inp: usize) -> LinearShape {
    LinearShape { out, inp }
}

/// The shapes the memory and cost models need.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelShapes {
    pub hidden: usize,
    pub padded_vocab: usize,
    /// q/k/v or MLA projections of one layer, without o_proj.
    pub attention: Vec<LinearShape>,
    /// Norm weights inside attention (q/k norm, MLA's q_a/kv_a layernorms), elements per layer.
    pub attention_norm_elems: usize,
    /// Bias elements of the attention projections per layer.
    pub attention_bias_elems: usize,
    pub o_proj: LinearShape,
    /// gate, up, down of one dense MLP.
    pub dense_mlp: [LinearShape; 3],
    /// gate, up, down of one expert (routed or shared); `None` for dense models.
    pub expert: Option<[LinearShape; 3]>,
    pub n_routed_experts: usize,
    pub n_shared_experts: usize,
}

impl ModelShapes {
    pub fn new(m: &ModelConfig) -> Self {
        let h = m.hidden_size;
        let nh = m.num_attention_heads;
        let (attention, attention_norm_elems, attention_bias_elems) = match m.mla {
            Some(a) => {
                let qk = a.qk_nope_head_dim + a.qk_rope_head_dim;
                let mut v = Vec::new();
                let mut norms = a.kv_lora_rank;
                match a.q_lora_rank {
                    Some(r) => {
                        v.push(lin(r, h));
                        v.push(lin(nh * qk, r));
                        norms += r;
                    }
                    None => v.push(lin(nh * qk, h)),
                }
                v.push(lin(a.kv_lora_rank + a.qk_rope_head_dim, h));
                v.push(lin(nh * (a.qk_nope_head_dim + a.v_head_dim), a.kv_lora_rank));
                (v, norms, 0)
            }
            None => {
                let (q, kv) = (nh * m.head_dim, m.num_key_value_heads * m.head_dim);
                let norms = if m.qk_norm { 2 * m.head_dim } else { 0 };
                let bias = if m.qkv_bias { q + 2 * kv } else { 0 };
                (vec![lin(q, h), lin(kv, h), lin(kv, h)], norms, bias)
            }
        };
        let i = m.intermediate_size;
        let expert = m.moe.map(|e| {
            let mi = e.moe_intermediate_size;
            [lin(mi, h), lin(mi, h), lin(h, mi)]
        });
        Self {
            hidden: h,
            padded_vocab: m.padded_vocab(),
            attention,
            attention_norm_elems,
            attention_bias_elems,
            o_proj: lin(h, m.o_proj_in_features()),
            dense_mlp: [lin(i, h), lin(i, h), lin(h, i)],
            expert,
            n_routed_experts: m.moe.map_or(0, |e| e.n_routed_experts),
            n_shared_experts: m.moe.map_or(0, |e| e.n_shared_experts),
        }
    }

    /// One layer's attention projections (without o_proj), column-split by standard TP.
    pub fn attention_bytes(&self, f: &WeightFormat, tp: usize) -> u64 {
        let linears: u64 = self.attention.iter().map(|s| f.linear_bytes(*s, tp, 1)).sum();
        linears + f.plain_bytes((self.attention_norm_elems + self.attention_bias_elems / tp) as u64)
    }

    /// One dense MLP: gate and up split by output rows, down by input columns.
    pub fn dense_mlp_bytes(&self, f: &WeightFormat, split: usize) -> u64 {
        let [g, u, d] = self.dense_mlp;
        f.linear_bytes(g, split, 1) + f.linear_bytes(u, split, 1) + f.linear_bytes(d, 1, split)
    }

    /// One MoE layer on one rank: its share of routed experts, the shared experts (standard
    /// TP) and the router (replicated, model dtype, plus the f32 correction bias).
    pub fn moe_layer_bytes(&self, f: &WeightFormat, p: &ParallelConfig) -> u64 {
        let Some([g, u, d]) = self.expert else { return 0 };
        let tp = p.tensor_parallel_size;
        let ep = p.expert_parallel_size();
        let one_expert = |split: usize| f.linear_bytes(g, split, 1) + f.linear_bytes(u, split, 1) + f.linear_bytes(d, 1, split);
        let routed = if ep > 1 {
            self.n_routed_experts.div_ceil(ep) as u64 * one_expert(1)
        } else {
            self.n_routed_experts as u64 * one_expert(tp)
        };
        let shared = self.n_shared_experts as u64 * one_expert(tp);
        let router = f.plain_bytes((self.n_routed_experts * self.hidden) as u64) + 4 * self.n_routed_experts as u64;
        routed + shared + router
    }
}
