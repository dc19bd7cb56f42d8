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
    /// q/k/v or MLA projections of one layer, without o_proj, each with how standard TP
    /// splits it.
    pub attention: Vec<(LinearShape, HeadSplit)>,
    /// Norm weights inside attention (q/k norm, MLA's q_a/kv_a layernorms), elements per layer
    /// (replicated).
    pub attention_norm_elems: usize,
    /// Bias elements of the attention projections per layer, split as their projections.
    pub attention_bias: Vec<(usize, HeadSplit)>,
    pub o_proj: LinearShape,
    /// gate, up, down of one dense MLP.
    pub dense_mlp: [LinearShape; 3],
    /// gate, up, down of one expert (routed or shared); `None` for dense models.
    pub expert: Option<[LinearShape; 3]>,
    pub n_routed_experts: usize,
    pub n_shared_experts: usize,
    /// The router has `noaux_tc`'s f32 correction bias (DeepSeek-V3/R1).
    pub router_bias: bool,
}

/// How standard TP splits an attention projection (vLLM's rules,
/// [`HeadShard`](crate::decoder::HeadShard)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum HeadSplit {
    /// Every TP rank holds it whole (MLA's `q_a`, `kv_a`).
    Replicated,
    /// Split by query heads: `t` parts.
    QueryHeads,
    /// Split by KV heads, which are replicated once TP exceeds them: `min(t, n_kv)` parts.
    KvHeads(usize),
}

impl HeadSplit {
    pub fn parts(self, tp: usize) -> usize {
        match self {
            HeadSplit::Replicated => 1,
            HeadSplit::QueryHeads => tp,
            HeadSplit::KvHeads(n) => tp.min(n).max(1),
        }
    }
}

impl ModelShapes {
    pub fn new(m: &ModelConfig) -> Self {
        let h = m.hidden_size;
        let nh = m.num_attention_heads;
        use HeadSplit::{KvHeads, QueryHeads, Replicated};
        let (attention, attention_norm_elems, attention_bias) = match m.mla {
            Some(a) => {
                let qk = a.qk_nope_head_dim + a.qk_rope_head_dim;
                let mut v = Vec::new();
                let mut norms = a.kv_lora_rank;
                match a.q_lora_rank {
                    Some(r) => {
                        v.push((lin(r, h), Replicated));
                        v.push((lin(nh * qk, r), QueryHeads));
                        norms += r;
                    }
                    None => v.push((lin(nh * qk, h), QueryHeads)),
                }
                v.push((lin(a.kv_lora_rank + a.qk_rope_head_dim, h), Replicated));
                v.push((lin(nh * (a.qk_nope_head_dim + a.v_head_dim), a.kv_lora_rank), QueryHeads));
                (v, norms, vec![])
            }
            None => {
                let (q, kv) = (nh * m.head_dim, m.num_key_value_heads * m.head_dim);
                let norms = if m.qk_norm { 2 * m.head_dim } else { 0 };
                let kv_split = KvHeads(m.num_key_value_heads);
                let bias = if m.qkv_bias { vec![(q, QueryHeads), (kv, kv_split), (kv, kv_split)] } else { vec![] };
                (vec![(lin(q, h), QueryHeads), (lin(kv, h), kv_split), (lin(kv, h), kv_split)], norms, bias)
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
            attention_bias,
            o_proj: lin(h, m.o_proj_in_features()),
            dense_mlp: [lin(i, h), lin(i, h), lin(h, i)],
            expert,
            n_routed_experts: m.moe.map_or(0, |e| e.n_routed_experts),
            n_shared_experts: m.moe.map_or(0, |e| e.n_shared_experts),
            router_bias: m.moe.is_some_and(|e| e.topk_method == crate::config::TopkMethod::NoauxTc),
        }
    }

    /// One layer's attention projections (without o_proj) on one rank, column-split by
    /// standard TP as [`HeadSplit`] says. Biases are held in f32 (the GEMM contract's bias).
    pub fn attention_bytes(&self, f: &WeightFormat, tp: usize) -> u64 {
        let linears: u64 = self.attention.iter().map(|(s, split)| f.linear_bytes(*s, split.parts(tp), 1)).sum();
        let bias: usize = self.attention_bias.iter().map(|(n, split)| n / split.parts(tp)).sum();
        linears + f.plain_bytes(self.attention_norm_elems as u64) + 4 * bias as u64
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
        let bias = if self.router_bias { 4 * self.n_routed_experts as u64 } else { 0 };
        let router = f.plain_bytes((self.n_routed_experts * self.hidden) as u64) + bias;
        routed + shared + router
    }
}
