//! Our Llama and Qwen2 forwards — sharded over 2 DP ranks with every component at size 2 —
//! against candle-transformers' independent implementations on the same random weights:
//! last-position logits after a prefill and after one decode step (KV cache), within 1e-4 of
//! the largest logit.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use candle_core::{DType as CDType, Device as CDevice, Tensor as CTensor};
use candle_nn::VarBuilder;
use finetp_backend_cpu::CpuBackend;
use finetp_core::backend::{Backend, SampleParams};
use finetp_core::config::{FinegrainedTpConfig, ModelConfig, ParallelConfig};
use finetp_core::decoder::{CausalLm, KV_BLOCK_SIZE, KvLayout, StepBatch, StepInputs};
use finetp_core::parallel::StepCounts;
use finetp_core::plan::Plan;
use finetp_core::shard::InMemoryWeights;
use finetp_engine::{Launcher, Rank};
use finetp_model_llama::{Llama, tensor_shapes};

const TOL: f32 = 1e-4;

fn config_json(model_type: &str) -> String {
    format!(
        r#"{{"model_type":"{model_type}","vocab_size":120,"hidden_size":48,"intermediate_size":96,"num_hidden_layers":2,
            "num_attention_heads":6,"num_key_value_heads":2,"rms_norm_eps":1e-6,"rope_theta":10000.0,
            "max_position_embeddings":64,"tie_word_embeddings":false,"sliding_window":64,"max_window_layers":2,
            "use_sliding_window":false,"hidden_act":"silu"}}"#
    )
}

fn candle_vars(w: &InMemoryWeights) -> HashMap<String, CTensor> {
    w.tensors
        .iter()
        .map(|(n, t)| (n.clone(), CTensor::from_vec(t.to_f32_vec().unwrap(), t.shape.as_slice(), &CDevice::Cpu).unwrap()))
        .collect()
}

/// Our logits for `prompt` then for `next` one step later, on both ranks (same prompt each).
fn ours(cfg: &ModelConfig, w: Arc<InMemoryWeights>, prompt: &[u32], next: u32) -> (Vec<f32>, Vec<f32>) {
    let plan = Plan::new(&ParallelConfig::new(2, 1, 1, false, FinegrainedTpConfig::uniform(2)).unwrap());
    let per_rank = Launcher::threads(Duration::from_secs(20))
        .run(&plan, |Rank { be, groups: g, .. }: Rank<CpuBackend>| {
            let model = Llama::load(&be, cfg, &*w, &g).unwrap();
            let layout = KvLayout::reserved(1, 16, KV_BLOCK_SIZE).unwrap();
            let mut kv = model.new_kv_cache(&be, layout).unwrap();
            let step = |ids: Vec<u32>, past: usize, kv: &mut _| {
                let n = ids.len();
                let mut inputs = StepInputs::new(layout.reserved_table(), layout.max_blocks);
                inputs.push_sequence(0, &ids, past, SampleParams::GREEDY);
                let batch = StepBatch::upload(&be, &inputs, StepCounts::new(vec![n, n], 1), StepCounts::new(vec![1, 1], 1)).unwrap();
                be.download(&model.forward(&be, &batch, kv).unwrap()).unwrap().to_f32_vec().unwrap()
            };
            let first = step(prompt.to_vec(), 0, &mut kv);
            let second = step(vec![next], prompt.len(), &mut kv);
            Ok((first, second))
        })
        .unwrap();
    assert_eq!(per_rank[0], per_rank[1], "both ranks ran the same prompt");
    per_rank[0].clone()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    let err = got.iter().zip(want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(err / scale <= TOL, "{what}: max |ours - candle| / max |candle| = {:.2e} > {TOL:e}", err / scale);
}

const PROMPT: [u32; 7] = [3, 17, 42, 99, 5, 64, 11];
const NEXT: u32 = 77;

#[test]
fn llama_matches_candle() {
    let json = config_json("llama");
    let cfg = ModelConfig::from_json_str(&json).unwrap();
    let w = Arc::new(InMemoryWeights::random(&tensor_shapes(&cfg), 9, 0.3));
    let (p, d) = ours(&cfg, w.clone(), &PROMPT, NEXT);

    let ccfg: candle_transformers::models::llama::LlamaConfig = serde_json::from_str(&json).unwrap();
    let ccfg = ccfg.into_config(false);
    let vb = VarBuilder::from_tensors(candle_vars(&w), CDType::F32, &CDevice::Cpu);
    let model = candle_transformers::models::llama::Llama::load(vb, &ccfg).unwrap();
    let mut cache = candle_transformers::models::llama::Cache::new(true, CDType::F32, &ccfg, &CDevice::Cpu).unwrap();
    let input = CTensor::new(&PROMPT, &CDevice::Cpu).unwrap().unsqueeze(0).unwrap();
    let cp: Vec<f32> = model.forward(&input, 0, &mut cache).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let input = CTensor::new(&[NEXT], &CDevice::Cpu).unwrap().unsqueeze(0).unwrap();
    let cd: Vec<f32> = model.forward(&input, PROMPT.len(), &mut cache).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    assert_close(&p, &cp, "llama prefill logits");
    assert_close(&d, &cd, "llama decode logits");
}

#[test]
fn qwen2_matches_candle() {
    let json = config_json("qwen2");
    let cfg = ModelConfig::from_json_str(&json).unwrap();
    assert!(cfg.qkv_bias);
    let w = Arc::new(InMemoryWeights::random(&tensor_shapes(&cfg), 10, 0.3));
    let (p, d) = ours(&cfg, w.clone(), &PROMPT, NEXT);

    let ccfg: candle_transformers::models::qwen2::Config = serde_json::from_str(&json).unwrap();
    let vb = VarBuilder::from_tensors(candle_vars(&w), CDType::F32, &CDevice::Cpu);
    let mut model = candle_transformers::models::qwen2::ModelForCausalLM::new(&ccfg, vb).unwrap();
    let input = CTensor::new(&PROMPT, &CDevice::Cpu).unwrap().unsqueeze(0).unwrap();
    let cp: Vec<f32> = model.forward(&input, 0).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let input = CTensor::new(&[NEXT], &CDevice::Cpu).unwrap().unsqueeze(0).unwrap();
    let cd: Vec<f32> = model.forward(&input, PROMPT.len()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    assert_close(&p, &cp, "qwen2 prefill logits");
    assert_close(&d, &cd, "qwen2 decode logits");
}
