//! The whole CUDA backend — context, streams, memory, kernels, cuBLASLt, collectives, CUDA
//! graphs — driven by the engine against stub libraries (`tests/stubs/`: a driver whose memory
//! is host memory and which enforces the rules of stream capture, an NVRTC and a cuBLASLt that
//! compute nothing, and the logging NCCL), built here with `gcc -shared`. The test re-runs
//! itself with the stubs first on `LD_LIBRARY_PATH` (where cudarc looks), then generates with
//! a tiny Llama at DP 2, all four components at size 2, eager and graph, and checks what the
//! stubs logged:
//! - **one GPU** (the single-GPU path): the two ranks' streams share one capture — the leader
//!   begins it, the other stream joins by waiting on the leader's event, the capture ends once
//!   with that stream joined (the stub driver fails an unjoined, merged or isolated capture, a
//!   sync or a free inside it); collectives are captured device-to-device copies; each replay
//!   is one `cuGraphLaunch` on the leader's stream that the other stream then waits on; every
//!   kernel the decoder needs is launched, and GEMMs go to cuBLASLt;
//! - **two GPUs** (NCCL): each rank captures its own stream, with its NCCL calls inside;
//! - no call the stubs refused.
//!
//! Nothing computes, so the tokens are meaningless; numbers need a GPU. Without gcc the cases
//! are listed as ignored with the reason; `FINETP_REQUIRE_CUDA_STUBS=1` makes that a failure.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use finetp_backend_cuda::CudaBackend;
use finetp_core::config::{Architecture, FinegrainedTpConfig, ParallelConfig};
use finetp_core::plan::Plan;
use finetp_engine::{EngineConfig, EngineError, ExecMode, GenerationReport, Launcher, Rank, Request, Sampling};
use finetp_testkit::harness::{self, Case, Need};

const CHILD: &str = "FINETP_CUDA_STUB_CHILD";
const STUBS: [(&str, &str); 4] = [("cuda", "libcuda.so.1"), ("nvrtc", "libnvrtc.so.13"), ("cublaslt", "libcublasLt.so.13"), ("nccl", "libnccl.so.2")];
/// A case's body: given its log, the checks (run in a child process, see [`child`]).
type Body = fn(&Path) -> Result<(), String>;

/// The cases: name, pretend GPUs, body.
const CASES: [(&str, &str, Body); 2] = [
    ("cuda_stubs::one_gpu_two_ranks_share_one_capture_and_replay", "1", one_gpu),
    ("cuda_stubs::two_gpus_nccl_each_rank_captures_its_stream", "2", two_gpus),
];

fn main() {
    if let Ok(name) = std::env::var(CHILD) {
        child(&name);
    }
    let dir = std::env::temp_dir().join(format!("finetp-cuda-driver-stubs-{}", std::process::id()));
    let need = match build(&dir) {
        Ok(()) => Need::present("cuda stub libraries (gcc)", "FINETP_REQUIRE_CUDA_STUBS"),
        Err(why) => Need::absent("cuda stub libraries (gcc)", "FINETP_REQUIRE_CUDA_STUBS", why),
    };
    let cases = CASES
        .iter()
        .map(|&(name, gpus, _)| {
            let dir = dir.clone();
            Case::new(name, std::slice::from_ref(&need), move || in_child(name, gpus, &dir))
        })
        .collect();
    harness::run(cases)
}

/// Runs case `name` in a child process of this binary with the stubs on `LD_LIBRARY_PATH`
/// (where cudarc looks; it is read at start-up) and its own log, within two minutes.
fn in_child(name: &str, gpus: &str, dir: &Path) -> Result<(), String> {
    let log = dir.join(format!("calls-{gpus}gpu.log"));
    let _ = std::fs::remove_file(&log);
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut c = Command::new(me)
        .env(CHILD, name)
        .env("LD_LIBRARY_PATH", dir)
        .env("FINETP_NCCL_LIB", dir.join("libnccl.so.2"))
        .env("FINETP_STUB_GPUS", gpus)
        .env("FINETP_STUB_LOG", &log)
        .env("FINETP_STUB_NCCL_MOVE", "1")
        .env_remove("FINETP_CUDA_SINGLE_DEVICE")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = c.try_wait().map_err(|e| e.to_string())? {
            let out = c.wait_with_output().map_err(|e| e.to_string())?;
            return if status.success() { Ok(()) } else { Err(format!("{} (log: {})", String::from_utf8_lossy(&out.stderr).trim(), log.display())) };
        }
        if std::time::Instant::now() > deadline {
            let _ = c.kill();
            return Err(format!("the case did not finish in 120 s (log: {})", log.display()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// In the child: runs one case's body and exits with its result.
fn child(name: &str) -> ! {
    let log = PathBuf::from(std::env::var_os("FINETP_STUB_LOG").unwrap_or_default());
    let body = CASES.iter().find(|c| c.0 == name).map(|c| c.2);
    match body.map_or_else(|| Err(format!("no case {name}")), |f| f(&log)) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}

fn build(dir: &Path) -> Result<(), String> {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/stubs");
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let cc = std::env::var("CC").unwrap_or_else(|_| "gcc".into());
    for (name, lib) in STUBS {
        let out = Command::new(&cc).args(["-shared", "-fPIC", "-O1", "-Wall", "-Werror"]).arg(src.join(format!("{name}.c"))).arg("-o").arg(dir.join(lib)).arg("-lpthread").output().map_err(|e| format!("cannot run {cc}: {e}"))?;
        if !out.status.success() {
            return Err(format!("{cc} failed on {name}.c: {}", String::from_utf8_lossy(&out.stderr)));
        }
    }
    Ok(())
}

fn ensure(ok: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(msg()) }
}

/// A tiny Llama at DP 2, all four at size 2, on the stubs; what the stubs logged during it.
fn generate(log: &Path, mode: ExecMode) -> Result<(GenerationReport, String), String> {
    let before = std::fs::read_to_string(log).map(|t| t.len()).unwrap_or(0);
    let cfg = finetp_testkit::tiny::config(Architecture::Llama);
    let w = Arc::new(finetp_testkit::tiny::weights(&cfg, 3));
    let plan = Plan::new(&ParallelConfig::new(2, 1, 1, false, FinegrainedTpConfig::uniform(2)).map_err(|e| e.to_string())?);
    let requests: Vec<Request> = (0..2u32).map(|i| Request { id: i as usize, prompt: (1..4 + 2 * i).collect(), max_tokens: 4, sampling: Sampling::default(), stop_ids: vec![], ..Request::default() }).collect();
    let report = finetp_engine::generate(&Launcher::threads(Duration::from_secs(20)), &plan, &EngineConfig::new(mode, 32), &requests, |r: &Rank<CudaBackend>| {
        finetp_models::load(&r.be, &cfg, &*w, &r.groups).map_err(|source| EngineError::Model { rank: r.rank, source })
    })
    .map_err(|e| format!("generation on the stubs failed: {e}"))?;
    let all = std::fs::read_to_string(log).map_err(|e| format!("reading {}: {e}", log.display()))?;
    let text = all.get(before..).unwrap_or_default().to_string();
    ensure(!text.contains("ERROR"), || format!("the stubs refused calls:\n{}", text.lines().filter(|l| l.contains("ERROR")).collect::<Vec<_>>().join("\n")))?;
    Ok((report, text))
}

/// `key=value` of a log line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

fn lines<'a>(text: &'a str, call: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.split_whitespace().next() == Some(call)).collect()
}

fn replays(r: &GenerationReport) -> Result<usize, String> {
    let mut n = Vec::new();
    for rank in &r.ranks {
        let g = rank.graph.as_ref().ok_or_else(|| format!("rank {}: no graph report", rank.rank))?;
        ensure(g.eager_reason.is_none() && g.replays > 0 && g.captured_ops > 20, || format!("rank {}: not captured and replayed: {g:?}", rank.rank))?;
        n.push(g.replays);
    }
    ensure(n.windows(2).all(|w| w[0] == w[1]), || format!("ranks replayed different counts {n:?}"))?;
    Ok(n[0])
}

/// Every kernel of a Llama decode step, and cuBLASLt for the GEMMs.
fn decoder_kernels(text: &str) -> Result<(), String> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for l in lines(text, "cuLaunchKernel") {
        *seen.entry(field(l, "kernel").unwrap_or("")).or_default() += 1;
    }
    for k in ["finetp_embedding", "finetp_rms_norm", "finetp_rope", "finetp_kv_write", "finetp_attention", "finetp_silu_mul", "finetp_add_f32", "finetp_sample"] {
        ensure(seen.contains_key(k), || format!("{k} was never launched (launched: {seen:?})"))?;
    }
    ensure(!lines(text, "cublasLtMatmul").is_empty(), || "no GEMM reached cuBLASLt".into())
}

fn one_gpu(log: &Path) -> Result<(), String> {
    let (eager, text) = generate(log, ExecMode::Eager)?;
    ensure(eager.outputs.iter().all(|o| o.tokens.len() == 4), || format!("eager outputs {:?}", eager.outputs))?;
    ensure(lines(&text, "cuStreamBeginCapture").is_empty(), || "eager mode captured".into())?;
    decoder_kernels(&text)?;
    ensure(text.contains("cuMemPoolSetAttribute attr=4 value=18446744073709551615"), || "the memory pool's release threshold was not raised (every step would allocate afresh)".into())?;
    let (graph, text) = generate(log, ExecMode::Graph)?;
    let n = replays(&graph)?;
    // Two ranks, one GPU: streams 1 and 2 (made in rank order or not: the leader is whichever
    // began the capture).
    let begins = lines(&text, "cuStreamBeginCapture");
    ensure(begins.len() == 1, || format!("{} captures began, expected one over both ranks' streams: {begins:?}", begins.len()))?;
    let (leader, capture) = (field(begins[0], "stream").unwrap_or(""), field(begins[0], "capture").unwrap_or(""));
    let ends = lines(&text, "cuStreamEndCapture");
    ensure(ends.len() == 1 && field(ends[0], "stream") == Some(leader) && field(ends[0], "joined_streams") == Some("1"), || format!("the capture must end once, on the leader's stream, with the other stream joined: {ends:?}"))?;
    let joins: Vec<&str> = lines(&text, "cuStreamWaitEvent").into_iter().filter(|l| field(l, "recorded_on") == Some(leader) && field(l, "stream") != Some(leader) && field(l, "capture") == Some(capture)).collect();
    ensure(!joins.is_empty(), || "the other rank's stream never waited on the leader's events inside the capture".into())?;
    let captured_copies = lines(&text, "cuMemcpyDtoDAsync").into_iter().filter(|l| field(l, "capture") == Some(capture)).count();
    ensure(captured_copies > 0, || "no collective copy inside the capture".into())?;
    let launches = lines(&text, "cuGraphLaunch");
    ensure(launches.len() == n && launches.iter().all(|l| field(l, "stream") == Some(leader)), || format!("{n} replays, graph launches {launches:?}: one per replay, on the leader's stream"))?;
    // After each launch the other stream waits on an event the leader recorded after it.
    let after: Vec<&str> = text.lines().skip_while(|l| !l.starts_with("cuGraphLaunch")).filter(|l| l.starts_with("cuStreamWaitEvent") && field(l, "recorded_on") == Some(leader) && field(l, "capture") == Some("0")).collect();
    ensure(after.len() >= n, || format!("{n} replays but the other stream waited on the leader {} times after them", after.len()))?;
    // Before each launch the leader waits on the other rank's arrival event.
    let mut waited = 0;
    let mut prev: Option<&str> = None;
    for l in text.lines() {
        if l.starts_with("cuGraphLaunch") && prev.is_some_and(|p| p.starts_with("cuStreamWaitEvent") && field(p, "stream") == Some(leader) && field(p, "recorded_on") != Some(leader)) {
            waited += 1;
        }
        if l.starts_with("cuStreamWaitEvent") && field(l, "stream") == Some(leader) || l.starts_with("cuGraphLaunch") {
            prev = Some(l);
        }
    }
    ensure(waited == n, || format!("{n} replays, {waited} launched after waiting on the other rank's arrival"))?;
    decoder_kernels(&text)
}

fn two_gpus(log: &Path) -> Result<(), String> {
    let (graph, text) = generate(log, ExecMode::Graph)?;
    let n = replays(&graph)?;
    let begins = lines(&text, "cuStreamBeginCapture");
    let ends = lines(&text, "cuStreamEndCapture");
    ensure(begins.len() == 2 && ends.len() == 2 && ends.iter().all(|l| field(l, "joined_streams") == Some("0")), || format!("each rank must capture its own stream: {begins:?} {ends:?}"))?;
    let streams: Vec<&str> = begins.iter().filter_map(|l| field(l, "stream")).collect();
    ensure(streams[0] != streams[1], || "both captures on one stream".into())?;
    ensure(lines(&text, "cuGraphLaunch").len() == 2 * n, || format!("{n} replays per rank, {} launches", lines(&text, "cuGraphLaunch").len()))?;
    ensure(text.contains("ncclCommInitRank"), || "no NCCL communicator".into())?;
    ensure(text.contains("ncclAllGather") || text.contains("ncclSend"), || "no NCCL collective".into())?;
    decoder_kernels(&text)
}
