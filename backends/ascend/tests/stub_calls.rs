//! The Ascend backend end to end against logging stub libraries: `tests/stubs/*.c`, built here
//! with `gcc -shared` into `libascendcl.so`, `libnnopbase.so`, `libopapi.so` and `libhccl.so`,
//! found through `FINETP_*_LIB`. Two ranks (DP 2) run one MLP layer at size 2 with uneven token
//! counts (3 and 1), and the calls the stubs logged must show:
//! - the same root-info bytes reach both ranks, made once per group by its member 0;
//! - communicators are created in the same (the plan's) order on both ranks;
//! - the V collectives carry the right element counts and displacements;
//! - every `…GetWorkspaceSize` is followed on its thread by its own execute, with the
//!   executor it made and a workspace of at least the size it asked for, allocated and live.
//!
//! The stubs compute nothing, so this checks the plumbing, not numbers: those need an NPU
//! (`tests/conformance.rs`). Without gcc the case is listed as ignored with the reason;
//! `FINETP_REQUIRE_ASCEND_STUBS=1` (CI) makes that a failure.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use finetp_backend_ascend::AscendBackend;
use finetp_core::backend::{Backend, HostTensor};
use finetp_core::config::{Component, FinegrainedTpConfig, ParallelConfig};
use finetp_core::layers::ParallelMlp;
use finetp_core::parallel::StepCounts;
use finetp_core::plan::Plan;
use finetp_core::shard::InMemoryWeights;
use finetp_engine::{EngineError, Launcher, Rank};
use finetp_testkit::harness::{self, Need};

const HIDDEN: usize = 8;
const INTER: usize = 16;
const TOKENS: [usize; 2] = [3, 1];
const LIBS: [(&str, &str); 4] = [("ascendcl", "FINETP_ASCENDCL_LIB"), ("nnopbase", "FINETP_NNOPBASE_LIB"), ("opapi", "FINETP_OPAPI_LIB"), ("hccl", "FINETP_HCCL_LIB")];

fn main() {
    let dir = std::env::temp_dir().join(format!("finetp-ascend-stubs-{}", std::process::id()));
    let need = match build_stubs(&dir) {
        Ok(()) => Need::present("ascend logging stubs (gcc)", "FINETP_REQUIRE_ASCEND_STUBS"),
        Err(why) => Need::absent("ascend logging stubs (gcc)", "FINETP_REQUIRE_ASCEND_STUBS", why),
    };
    let log = dir.join("calls.log");
    // SAFETY: set before any thread starts; the backend reads them on its first `open`.
    unsafe {
        for (lib, env) in LIBS {
            std::env::set_var(env, dir.join(format!("lib{lib}.so")));
        }
        std::env::set_var("FINETP_STUB_LOG", &log);
    }
    harness::run(vec![harness::Case::new("ascend_stubs::two_ranks_mlp_at_size_2_make_the_expected_calls", &[need], move || two_ranks(&log))])
}

/// Compiles the four stubs (the other three link against the ACL stub, as CANN's do).
fn build_stubs(dir: &Path) -> Result<(), String> {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let src = here.join("tests/stubs");
    let inc = [here.join("../../bindings/ascend-sys/include"), here.join("../../bindings/hccl-sys/include"), src.clone()];
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let cc = std::env::var("CC").unwrap_or_else(|_| "gcc".into());
    for (lib, _) in LIBS {
        let mut cmd = Command::new(&cc);
        cmd.args(["-shared", "-fPIC", "-O1", "-Wall", "-Werror"]);
        for i in &inc {
            cmd.arg(format!("-I{}", i.display()));
        }
        cmd.arg(src.join(format!("{lib}.c"))).arg("-o").arg(dir.join(format!("lib{lib}.so")));
        if lib != "ascendcl" {
            cmd.arg(format!("-L{}", dir.display())).arg("-lascendcl").arg("-Wl,-rpath,$ORIGIN");
        }
        let out = cmd.output().map_err(|e| format!("cannot run {cc}: {e}"))?;
        if !out.status.success() {
            return Err(format!("{cc} failed on {lib}.c: {}", String::from_utf8_lossy(&out.stderr)));
        }
    }
    Ok(())
}

fn weights() -> InMemoryWeights {
    let mut w = InMemoryWeights::default();
    let mut put = |name: &str, shape: &[usize]| {
        let n: usize = shape.iter().product();
        w.insert(name, HostTensor::f32((0..n).map(|i| (i % 7) as f32 * 0.1).collect(), shape).expect("fits"));
    };
    put("mlp.gate_proj.weight", &[INTER, HIDDEN]);
    put("mlp.up_proj.weight", &[INTER, HIDDEN]);
    put("mlp.down_proj.weight", &[HIDDEN, INTER]);
    w
}

fn two_ranks(log: &Path) -> Result<(), String> {
    let _ = std::fs::remove_file(log);
    let mut fg = FinegrainedTpConfig::default();
    fg.set(Component::Mlp, Some(2));
    let plan = Plan::new(&ParallelConfig::new(2, 1, 1, false, fg).map_err(|e| e.to_string())?);
    let w = weights();
    let shapes = Launcher::threads(Duration::from_secs(30))
        .run(&plan, |rank: Rank<AscendBackend>| {
            let fail = |e: String| EngineError::Config(format!("rank {}: {e}", rank.rank));
            let mlp = ParallelMlp::load(&rank.be, &w, "mlp", HIDDEN, INTER, rank.groups.layer(Component::Mlp)).map_err(|e| fail(e.to_string()))?;
            let t = TOKENS[rank.rank];
            let x = rank.be.upload(&HostTensor::f32(vec![0.5; t * HIDDEN], &[t, HIDDEN]).expect("fits")).map_err(|e| fail(e.to_string()))?;
            let counts = StepCounts::new(TOKENS.to_vec(), 1).for_group(rank.groups.mlp.info());
            let y = mlp.forward(&rank.be, x, &counts).map_err(|e| fail(e.to_string()))?;
            let host = rank.be.download(&y).map_err(|e| fail(e.to_string()))?;
            Ok(host.shape)
        })
        .map_err(|e| e.to_string())?;
    ensure(shapes == [vec![3, HIDDEN], vec![1, HIDDEN]], || format!("output shapes {shapes:?}"))?;
    let text = std::fs::read_to_string(log).map_err(|e| format!("reading {}: {e}", log.display()))?;
    check_log(&text)
}

fn ensure(ok: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(msg()) }
}

/// `key=value` of a log line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// The log's lines by device (rank), in order.
fn by_device(text: &str) -> HashMap<String, Vec<&str>> {
    let mut m: HashMap<String, Vec<&str>> = HashMap::new();
    for line in text.lines() {
        if let Some(d) = field(line, "dev") {
            m.entry(d.to_string()).or_default().push(line);
        }
    }
    m
}

fn check_log(text: &str) -> Result<(), String> {
    let devs = by_device(text);
    let (d0, d1) = (devs.get("0").ok_or("no calls from device 0")?, devs.get("1").ok_or("no calls from device 1")?);
    // Root info: made by member 0 of each group, the same bytes at both members' init.
    let made: Vec<&str> = d0.iter().filter(|l| l.contains("HcclGetRootInfo")).filter_map(|l| field(l, "token")).collect();
    ensure(d1.iter().all(|l| !l.contains("HcclGetRootInfo")), || "member 1 made root info".into())?;
    let inits = |d: &[&str]| -> Vec<(String, String)> {
        d.iter().filter(|l| l.contains("HcclCommInitRootInfo")).map(|l| (field(l, "token").unwrap_or("").to_string(), field(l, "checksum").unwrap_or("").to_string())).collect()
    };
    let (i0, i1) = (inits(d0), inits(d1));
    // DP 2 with mlp at 2: two groups of two members (mlp, then dp, in the plan's order); the
    // groups of one (embedding, lm_head, o_proj, tp) need no communicator.
    ensure(made.len() == 2 && i0.len() == 2, || format!("expected 2 communicators, got root infos {made:?} and inits {i0:?}"))?;
    ensure(i0 == i1, || format!("communicators created in a different order or from different root info: rank 0 {i0:?}, rank 1 {i1:?}"))?;
    ensure(i0.iter().map(|(t, _)| t.as_str()).eq(made.iter().copied()), || format!("inits {i0:?} do not follow the root infos made {made:?}"))?;
    // V collectives of the MLP group (counts in elements: tokens x hidden).
    let (c0, c1) = ((TOKENS[0] * HIDDEN) as u64, (TOKENS[1] * HIDDEN) as u64);
    for (me, d) in [(0, d0), (1, d1)] {
        let mine = [c0, c1][me];
        let ag: Vec<&&str> = d.iter().filter(|l| l.contains("HcclAllGatherV")).collect();
        ensure(ag.len() == 1, || format!("rank {me}: {} all-gathers", ag.len()))?;
        let want = format!("{c0},{c1}");
        ensure(field(ag[0], "send") == Some(&mine.to_string()) && field(ag[0], "recv_counts") == Some(&want) && field(ag[0], "recv_displs") == Some(&format!("0,{c0}")), || format!("rank {me}: {}", ag[0]))?;
        let rs: Vec<&&str> = d.iter().filter(|l| l.contains("HcclReduceScatterV")).collect();
        ensure(rs.len() == 1, || format!("rank {me}: {} reduce-scatters", rs.len()))?;
        ensure(field(rs[0], "send_counts") == Some(&want) && field(rs[0], "send_displs") == Some(&format!("0,{c0}")) && field(rs[0], "recv") == Some(&mine.to_string()), || format!("rank {me}: {}", rs[0]))?;
        ensure(d.iter().any(|l| l.contains("aclrtSynchronizeStreamWithTimeout") && field(l, "ms") == Some("30000")), || format!("rank {me}: no collective waited within the group's timeout"))?;
        check_two_phase(me, d)?;
    }
    Ok(())
}

/// Every plan is followed by its own run before the next plan on that device, with the size it
/// asked for and a live allocation at least that big (null for 0).
fn check_two_phase(me: usize, d: &[&str]) -> Result<(), String> {
    let mut live: HashMap<String, u64> = HashMap::new();
    let mut pending: Option<(&str, &str, u64)> = None;
    let mut ran: HashMap<&str, usize> = HashMap::new();
    for line in d {
        if line.contains("aclrtMalloc ") {
            live.insert(field(line, "ptr").unwrap_or("").to_string(), field(line, "size").and_then(|s| s.parse().ok()).unwrap_or(0));
        } else if line.contains("aclrtFree ") {
            live.remove(field(line, "ptr").unwrap_or(""));
        } else if line.contains("plan op=") {
            ensure(pending.is_none(), || format!("rank {me}: {line} planned before the previous plan ran ({pending:?})"))?;
            pending = Some((field(line, "op").unwrap_or(""), field(line, "exec").unwrap_or(""), field(line, "ws").and_then(|s| s.parse().ok()).unwrap_or(0)));
        } else if line.contains("run op=") {
            let (op, exec, ws) = pending.take().ok_or_else(|| format!("rank {me}: {line} without a plan"))?;
            ensure(field(line, "op") == Some(op) && field(line, "exec") == Some(exec) && field(line, "planned") == Some(op), || format!("rank {me}: {line} after planning {op} exec={exec}"))?;
            ensure(field(line, "ws") == Some(&ws.to_string()), || format!("rank {me}: {line}: planned a workspace of {ws}"))?;
            let ptr = field(line, "wsptr").unwrap_or("");
            if ws > 0 {
                let have = live.get(ptr).copied();
                ensure(have.is_some_and(|h| h >= ws), || format!("rank {me}: {line}: workspace {ptr} is not a live allocation of at least {ws} bytes ({have:?})"))?;
            } else {
                ensure(ptr == "(nil)" || ptr == "0x0" || live.contains_key(ptr), || format!("rank {me}: {line}: a bad workspace pointer"))?;
            }
            *ran.entry(op).or_default() += 1;
        }
    }
    ensure(pending.is_none(), || format!("rank {me}: {pending:?} was planned and never run"))?;
    // gate_up and down projections, then SiLU·mul between them.
    ensure(ran.get("aclnnMatmul") == Some(&2) && ran.get("aclnnSwiGlu") == Some(&1), || format!("rank {me}: operators run {ran:?}"))?;
    Ok(())
}
