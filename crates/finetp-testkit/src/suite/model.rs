//! Whole models on `B` at DP 2 with all four components at size 2, against the CPU backend
//! under the same plan: the logits of a teacher-forced prefill (every position of prompt +
//! the CPU's greedy continuation) within [`Op::Logits`], and greedy generation, eager and graph,
//! giving the CPU's tokens at every position where the CPU's top-1/top-2 margin exceeds that
//! tolerance (after the first position where it does not, the runs may fork, and are not
//! compared). Tiny random checkpoints of several architectures, and the default model
//! (SmolLM2-135M, when present).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use finetp_backend_cpu::CpuBackend;
use finetp_core::backend::{Device, SampleParams};
use finetp_core::config::{Architecture, FinegrainedTpConfig, ModelConfig, ParallelConfig};
use finetp_core::decoder::{KV_BLOCK_SIZE, KvLayout, StepBatch, StepInputs};
use finetp_core::parallel::StepCounts;
use finetp_core::plan::Plan;
use finetp_core::shard::WeightSource;
use finetp_engine::{EngineConfig, EngineError, ExecMode, Launcher, Rank, Request, Sampling};

use super::data::f32s;
use super::{Case, Env, ensure};
use crate::tolerance::{Op, argmax_rows, close, decisive};

/// The default model's path, when the harness found it.
pub(super) static SMOLLM2: OnceLock<PathBuf> = OnceLock::new();

/// Tokens each request generates.
const NEW_TOKENS: usize = 12;

pub(super) fn cases<B: Device>() -> Vec<Case<B>> {
    vec![
        Case::new("model_tiny_llama_matches_the_cpu", &[], |e| tiny::<B>(e, Architecture::Llama)),
        Case::new("model_tiny_mistral_sliding_window_matches_the_cpu", &[], |e| tiny::<B>(e, Architecture::Mistral)),
        Case::new("model_tiny_qwen3_matches_the_cpu", &[], |e| tiny::<B>(e, Architecture::Qwen3)),
        Case::new("model_tiny_deepseek_v3_matches_the_cpu", &[], |e| tiny::<B>(e, Architecture::DeepseekV3)),
        Case { name: "model_smollm2_dp2_all_four_at_size_2_matches_the_cpu", covers: &[], needs_model: true, body: smollm2::<B> },
    ]
}

/// What a model case runs: a config, weights, prompts, how many tokens to generate, and the
/// layout (DP size and fine-grained sizes; the suite's own cases use DP 2, all four at 2).
pub struct Subject {
    pub cfg: ModelConfig,
    pub weights: Arc<dyn WeightSource + Send + Sync>,
    pub prompts: Vec<Vec<u32>>,
    pub new_tokens: usize,
    pub dp: usize,
    pub sizes: FinegrainedTpConfig,
    /// Graph mode must have captured the decode step and replayed it on every rank (not run
    /// it eagerly because the backend refused the capture).
    pub require_capture: bool,
}

impl Subject {
    fn plan(&self) -> Result<Plan, String> {
        Ok(Plan::new(&ParallelConfig::new(self.dp, 1, 1, false, self.sizes).map_err(|e| e.to_string())?))
    }
}

/// The suite's layout: DP 2 with all four components at size 2.
fn dp2() -> (usize, FinegrainedTpConfig) {
    (2, FinegrainedTpConfig::uniform(2))
}

fn tiny<B: Device>(_env: &Env<B>, arch: Architecture) -> Result<(), String> {
    let cfg = crate::tiny::config(arch);
    let weights: Arc<dyn WeightSource + Send + Sync> = Arc::new(crate::tiny::weights(&cfg, 5));
    let vocab = cfg.vocab_size as u32;
    let prompts = (0..4u32).map(|r| (0..3 + 2 * r).map(|t| (t * 31 + r * 7 + 1) % vocab).collect()).collect();
    let (dp, sizes) = dp2();
    compare::<B>(&Subject { cfg, weights, prompts, new_tokens: NEW_TOKENS, dp, sizes, require_capture: false }, &format!("tiny {arch}"))
}

fn smollm2<B: Device>(_env: &Env<B>) -> Result<(), String> {
    let path = SMOLLM2.get().ok_or("the default model was not found")?;
    let ckpt = finetp_loader::Checkpoint::open(path).map_err(|e| e.to_string())?;
    let tok = ckpt.tokenizer.as_ref().ok_or("the default model has no tokenizer")?;
    let prompts = ["What is the capital of France?", "Write one sentence about the ocean.", "Name three primary colors.", "Why is the sky blue?"]
        .iter()
        .map(|p| {
            let text = format!("<|im_start|>user\n{p}<|im_end|>\n<|im_start|>assistant\n");
            tok.encode(text.as_str(), false).map(|e| e.get_ids().to_vec()).map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Decoded to f32 on both sides: a backend that keeps the Q4_1 blocks quantises its
    // activations, which moves logits by far more than this case's tolerance (the block GEMM
    // has its own cases, `gemm_block_weights_…`, and `hf_goldens.rs` bounds the whole model).
    let weights: Arc<dyn WeightSource + Send + Sync> = Arc::new(finetp_core::shard::Dequantized(ckpt.weights.clone()));
    let (dp, sizes) = dp2();
    compare::<B>(&Subject { cfg: ckpt.config.clone(), weights, prompts, new_tokens: 32, dp, sizes, require_capture: false }, "SmolLM2")
}

/// Greedy generation of every prompt on backend `D` (request `i` on DP rank `i % dp`).
fn generate<D: Device>(s: &Subject, mode: ExecMode) -> Result<Vec<Vec<u32>>, String> {
    let requests: Vec<Request> = s
        .prompts
        .iter()
        .enumerate()
        .map(|(id, p)| Request { id, prompt: p.clone(), max_tokens: s.new_tokens, sampling: Sampling::default(), stop_ids: vec![], ..Request::default() })
        .collect();
    let max_seq_len = s.prompts.iter().map(Vec::len).max().unwrap_or(0) + s.new_tokens;
    let cfg = EngineConfig::new(mode, max_seq_len);
    let report = finetp_engine::generate(&Launcher::default(), &s.plan()?, &cfg, &requests, |r: &Rank<D>| {
        finetp_models::load(&r.be, &s.cfg, &*s.weights, &r.groups).map_err(|source| EngineError::Model { rank: r.rank, source })
    })
    .map_err(|e| e.to_string())?;
    if mode == ExecMode::Graph && s.require_capture {
        for rank in &report.ranks {
            let g = rank.graph.as_ref().ok_or_else(|| format!("rank {}: graph mode reported no graph", rank.rank))?;
            ensure(g.eager_reason.is_none() && g.replays > 0, || format!("rank {}: the decode step was not captured and replayed ({g:?})", rank.rank))?;
        }
    }
    Ok(report.outputs.into_iter().map(|o| o.tokens).collect())
}

/// One teacher-forced prefill step on each DP rank of its requests' sequences (request `i`
/// on rank `i % dp`, as the engine deals them), with the logits of every position:
/// `[len, vocab]` per request.
fn prefill_logits<D: Device>(s: &Subject, seqs: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, String> {
    let dp = s.dp;
    let mine = |rank: usize| (rank..seqs.len()).step_by(dp).collect::<Vec<usize>>();
    let rows: Vec<usize> = (0..dp).map(|r| mine(r).iter().map(|&i| seqs[i].len()).sum()).collect();
    let vocab = s.cfg.vocab_size;
    let per_rank = Launcher::default()
        .run(&s.plan()?, |r: Rank<D>| {
            let run = || -> Result<Vec<(usize, Vec<f32>)>, String> {
                let model = finetp_models::load(&r.be, &s.cfg, &*s.weights, &r.groups).map_err(|e| e.to_string())?;
                let ids = mine(r.rank);
                let longest = ids.iter().map(|&i| seqs[i].len()).max().unwrap_or(1);
                let layout = KvLayout::reserved(ids.len(), longest, KV_BLOCK_SIZE).ok_or("layout overflows")?;
                let mut kv = model.new_kv_cache(&r.be, layout).map_err(|e| e.to_string())?;
                let mut inputs = StepInputs::new(layout.reserved_table(), layout.max_blocks);
                for (slot, &i) in ids.iter().enumerate() {
                    inputs.push_sequence(slot, &seqs[i], 0, Some(SampleParams::GREEDY));
                }
                inputs.logit_rows = (0..inputs.rows() as u32).collect();
                inputs.sampling = vec![SampleParams::GREEDY; inputs.rows()];
                let counts = StepCounts::new(rows.clone(), 1);
                let batch = StepBatch::upload(&r.be, &inputs, counts.clone(), counts).map_err(|e| e.to_string())?;
                let logits = f32s(&r.be, &model.forward(&r.be, &batch, &mut kv).map_err(|e| e.to_string())?)?;
                let mut at = 0;
                Ok(ids
                    .iter()
                    .map(|&i| {
                        let n = seqs[i].len() * vocab;
                        at += n;
                        (i, logits[at - n..at].to_vec())
                    })
                    .collect())
            };
            run().map_err(|e| EngineError::Config(format!("rank {}: {e}", r.rank)))
        })
        .map_err(|e| e.to_string())?;
    let mut out = vec![Vec::new(); seqs.len()];
    for (i, l) in per_rank.into_iter().flatten() {
        out[i] = l;
    }
    Ok(out)
}

/// Where greedy decoding on `B` must give the CPU's tokens: positions `0..n` of each request,
/// `n` the first position whose CPU logits are not decisive (inclusive of none after it).
fn comparable(margins: &[bool], prompt_len: usize, new_tokens: usize) -> usize {
    (0..new_tokens).take_while(|&j| margins.get(prompt_len - 1 + j).copied().unwrap_or(false)).count()
}

/// `s` on backend `B` against the CPU under the same plan, as the module docs say: logits of a
/// teacher-forced prefill within [`Op::Logits`], greedy tokens eager and graph wherever the
/// CPU's margin is decisive. For backends' own whole-model checks at other layouts (CUDA's
/// DP 4 on one GPU).
///
/// # Errors
/// The first difference, as text.
pub fn compare<B: Device>(s: &Subject, label: &str) -> Result<(), String> {
    let vocab = s.cfg.vocab_size;
    let cpu_tokens = generate::<CpuBackend>(s, ExecMode::Eager)?;
    let forced: Vec<Vec<u32>> = s.prompts.iter().zip(&cpu_tokens).map(|(p, t)| [p.clone(), t.clone()].concat()).collect();
    let want = prefill_logits::<CpuBackend>(s, &forced)?;
    let got = prefill_logits::<B>(s, &forced)?;
    let act = B::open(&finetp_core::backend::DeviceSlot::SOLE).map_err(|e| e.to_string())?.activation_dtype();
    let tol = Op::Logits.tol(act);
    let mut margins = Vec::new();
    for i in 0..forced.len() {
        let what = format!("{label}: teacher-forced logits of request {i}");
        close(&got[i], &want[i], tol, &what)?;
        let m = decisive(&want[i], vocab, tol);
        let (a, b) = (argmax_rows(&got[i], vocab), argmax_rows(&want[i], vocab));
        for (pos, ok) in m.iter().enumerate() {
            ensure(!ok || a[pos] == b[pos], || format!("{what}: position {pos} picks {} where the CPU picks {} by a decisive margin", a[pos], b[pos]))?;
        }
        // The CPU's own decode steps (KV cache) agree with its teacher-forced prefill.
        let p = s.prompts[i].len();
        for j in 0..comparable(&m, p, s.new_tokens) {
            ensure(cpu_tokens[i][j] as usize == b[p - 1 + j], || format!("{label}: the CPU's decode of request {i} gave {} at step {j}, its prefill {}", cpu_tokens[i][j], b[p - 1 + j]))?;
        }
        margins.push(m);
    }
    for mode in [ExecMode::Eager, ExecMode::Graph] {
        let tokens = generate::<B>(s, mode)?;
        for (i, (t, c)) in tokens.iter().zip(&cpu_tokens).enumerate() {
            let n = comparable(&margins[i], s.prompts[i].len(), s.new_tokens);
            ensure(t[..n] == c[..n], || format!("{label} {mode:?}: request {i} gives {:?}, the CPU {:?} (first {n} compared)", &t[..n], &c[..n]))?;
        }
    }
    Ok(())
}
