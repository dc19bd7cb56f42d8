//! `finetp serve`: `run`'s model and layout behind an OpenAI-compatible HTTP server.
//!
//! The ranks run as threads (`finetp_engine::serve`) on a thread of their own; the HTTP side
//! runs on tokio (`finetp_server`). Each rank's KV cache is a pool of blocks sized from the
//! memory left after the weights (`--kv-cache-memory-fraction`), handed to requests as they
//! start and taken back as they end. SIGTERM (or Ctrl-C) stops accepting connections, lets the
//! requests in flight finish, stops the ranks and exits 0.

use std::sync::Arc;

use anyhow::{Context, anyhow};
use clap::Args;
use finetp_core::backend::{DType, Device};
use finetp_core::decoder::KV_BLOCK_SIZE;
use finetp_core::memory::{MemoryReport, reserved_kv_bytes};
use finetp_core::plan::Plan;
use finetp_engine::{BackendKind, EngineConfig, EngineError, ExecMode, Hub, Launcher, Rank, RankReport, WithBackend};
use finetp_loader::Checkpoint;

use crate::Failure;
use crate::run_cmd::{Mode, Opened, RunArgs};

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub run: RunArgs,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// 0: any free port (the address is printed).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Sequences each rank runs at once (vLLM's flag).
    #[arg(long, default_value_t = 32)]
    pub max_num_seqs: usize,
    /// Share of the memory left after the weights that the KV caches may use (vLLM's
    /// `gpu_memory_utilization`, for the memory after the weights; host memory on the CPU).
    #[arg(long, default_value_t = 0.5)]
    pub kv_cache_memory_fraction: f64,
    /// Requests that may wait to start; beyond, the server answers 429.
    #[arg(long, default_value_t = 1024)]
    pub max_queue: usize,
    /// The name clients give as `model` (default: the model file's or directory's name).
    #[arg(long)]
    pub served_model_name: Option<String>,
}

pub fn serve(args: &ServeArgs) -> Result<(), Failure> {
    let r = &args.run;
    for (given, flag) in [(!r.prompts.is_empty(), "--prompt"), (r.json, "--json"), (r.raw_prompt, "--raw-prompt")] {
        if given {
            return Err(Failure::Input(anyhow!("{flag} is a flag of `finetp run`; a server takes its prompts from requests")));
        }
    }
    if finetp_engine::mpi_launched_processes().is_some_and(|n| n > 1) {
        return Err(Failure::Input(anyhow!("`finetp serve` runs its ranks as threads of one process; under mpirun use `finetp run`")));
    }
    if args.max_num_seqs == 0 || r.max_num_batched_tokens == 0 {
        return Err(Failure::Input(anyhow!("--max-num-seqs and --max-num-batched-tokens must be at least 1")));
    }
    if !(args.kv_cache_memory_fraction > 0.0 && args.kv_cache_memory_fraction <= 1.0) {
        return Err(Failure::Input(anyhow!("--kv-cache-memory-fraction must be in (0, 1], got {}", args.kv_cache_memory_fraction)));
    }
    let Opened { parallel, backend, launcher, here, path, ckpt, limits } = crate::run_cmd::open(r)?;
    let plan = Plan::new(&parallel);
    let format = crate::run_cmd::held_format(&*ckpt.weights, backend);
    let planned = MemoryReport::new(&ckpt.config, &parallel, format).total();
    // Each rank's pool: the memory left after every rank's weights, times the fraction, shared
    // evenly; no more than its sequences could ever use; at least one longest request.
    let block_bytes = reserved_kv_bytes(&ckpt.config, parallel.tensor_parallel_size, DType::F32, 1, KV_BLOCK_SIZE).unwrap_or(u64::MAX).max(1);
    let max_blocks = limits.max_model_len.div_ceil(KV_BLOCK_SIZE);
    let per_rank_memory = match r.memory_budget_gib {
        Some(gib) => Some(crate::host_memory::budget_bytes(gib).map_err(Failure::Input)?),
        None if backend == BackendKind::Cpu => crate::host_memory::available_bytes().map(|a| a / here.max(1) as u64),
        None => None,
    };
    let left = per_rank_memory.map_or(u64::MAX, |m| m.saturating_sub(planned));
    let budget_blocks = ((left as f64 * args.kv_cache_memory_fraction) / block_bytes as f64) as usize;
    let kv_blocks = budget_blocks.min(args.max_num_seqs.saturating_mul(max_blocks));
    if kv_blocks < max_blocks {
        return Err(Failure::Input(anyhow!(
            "each rank's KV cache would hold {kv_blocks} blocks of {KV_BLOCK_SIZE} tokens ({:.1} MiB each), fewer than one request of --max-model-len {} needs ({max_blocks}): lower --max-model-len, raise --kv-cache-memory-fraction or use larger fine-grained TP sizes",
            block_bytes as f64 / (1u64 << 20) as f64,
            limits.max_model_len
        )));
    }
    let cfg = EngineConfig {
        mode: match r.mode {
            Mode::Eager => ExecMode::Eager,
            Mode::Graph => ExecMode::Graph,
        },
        max_seq_len: limits.max_model_len,
        max_num_batched_tokens: r.max_num_batched_tokens,
        max_num_seqs: Some(args.max_num_seqs),
        kv_blocks: Some(kv_blocks),
    };
    let name = args.served_model_name.clone().unwrap_or_else(|| {
        path.file_stem().map_or_else(|| path.display().to_string(), |s| s.to_string_lossy().into_owned())
    });
    let tokenizer = ckpt.tokenizer.clone().ok_or_else(|| Failure::Input(anyhow!("{} has no tokenizer", path.display())))?;
    let model = finetp_server::ServedModel {
        name: name.clone(),
        tokenizer,
        prompt: ckpt.prompt.clone(),
        eos_token_ids: if r.ignore_eos { vec![] } else { ckpt.eos_token_ids.clone() },
        limits,
        default_max_tokens: r.max_tokens,
    };
    let hub = Arc::new(Hub::new(parallel.data_parallel_size, parallel.tensor_parallel_size, args.max_queue));
    let listener = std::net::TcpListener::bind((args.host.as_str(), args.port))
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))
        .map_err(Failure::Input)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    eprintln!(
        "finetp: {} on {} {backend} ranks ({:?} mode), {} sequences and {kv_blocks} KV blocks of {KV_BLOCK_SIZE} tokens per rank\n{plan}",
        ckpt.description,
        plan.world_size(),
        cfg.mode,
        args.max_num_seqs
    );
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let state = Arc::new(finetp_server::AppState::new(hub.clone(), model));
    let (engine_done_tx, engine_done) = tokio::sync::oneshot::channel::<()>();
    let work = Serve { plan: &plan, cfg: &cfg, hub: &hub, ckpt: &ckpt, timeout: launcher.timeout() };
    let outcome = std::thread::scope(|s| {
        let engine = s.spawn(move || {
            let out = finetp_engine::dispatch(backend, work);
            let _ = engine_done_tx.send(());
            out
        });
        let served = runtime.block_on(async {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            eprintln!("finetp: serving `{name}` on http://{addr} (OpenAI API: /v1/completions, /v1/chat/completions; /v1/models, /health, /metrics)");
            finetp_server::run(listener, state, shutdown(engine_done)).await
        });
        // Nothing more will be submitted: the ranks finish what they hold and end.
        hub.close();
        let engine = engine.join().map_err(|_| anyhow!("the engine thread panicked"))?;
        served.context("the HTTP server failed")?;
        anyhow::Ok(engine)
    })?;
    match outcome {
        Err(e) => Err(Failure::Input(e.into())),
        Ok(Err(e)) if e.is_bad_input() => Err(Failure::Input(anyhow::Error::new(e).context("cannot load the model"))),
        Ok(Err(e)) => Err(Failure::Runtime(anyhow::Error::new(e).context("the engine failed"))),
        Ok(Ok(reports)) => {
            let steps = reports.iter().map(|r| r.steps).max().unwrap_or(0);
            eprintln!("finetp: shut down cleanly after {steps} steps");
            Ok(())
        }
    }
}

/// Completes on SIGTERM or Ctrl-C (a graceful stop), or when the engine has ended (it failed).
async fn shutdown(engine_done: tokio::sync::oneshot::Receiver<()>) {
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = term => eprintln!("finetp: SIGTERM: no new connections; finishing the requests in flight"),
        _ = tokio::signal::ctrl_c() => eprintln!("finetp: interrupted: no new connections; finishing the requests in flight"),
        _ = engine_done => eprintln!("finetp: the engine has stopped; shutting the server down"),
    }
}

/// The ranks of a server, on whichever backend is chosen.
struct Serve<'a> {
    plan: &'a Plan,
    cfg: &'a EngineConfig,
    hub: &'a Hub,
    ckpt: &'a Checkpoint,
    /// The collective timeout; the launcher (threads) is made on the engine's thread.
    timeout: std::time::Duration,
}

impl WithBackend for Serve<'_> {
    type Output = Result<Vec<RankReport>, EngineError>;

    fn run<B: Device>(self, _kind: BackendKind) -> Self::Output {
        let ckpt = self.ckpt;
        finetp_engine::serve(&Launcher::threads(self.timeout), self.plan, self.cfg, self.hub, |r: &Rank<B>| crate::run_cmd::load_rank(ckpt, r))
    }
}
