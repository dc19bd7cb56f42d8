//! The NCCL collective layer against a logging stub `libnccl.so.2` (`tests/stubs/nccl.c`,
//! built here with `gcc -shared`, loaded through `FINETP_NCCL_LIB`): four ranks as threads of
//! DP 4 with the MLP at size 2 and o_proj at size 4 connect one communicator per group in the
//! plan's order, then run uneven and even collectives on the MLP group. The calls the stub
//! logged must show:
//! - each group's unique id made once, by its member 0, and the same bytes (token and
//!   checksum) reaching every member's `ncclCommInitRank`, with the right size and member;
//! - every rank creating its communicators in the same order, the plan's;
//! - uneven all-gather / reduce-scatter / all-to-all as grouped `ncclSend`/`ncclRecv` with the
//!   right counts and offsets, every send matched by the peer's receive of the same count;
//!   even counts as NCCL's own all-gather and reduce-scatter.
//!
//! The stub moves no data and needs no driver (the layer takes raw pointers and streams), so
//! this checks the plumbing; numbers need a GPU (`tests/conformance.rs`). Without gcc the case
//! is listed as ignored with the reason; `FINETP_REQUIRE_CUDA_STUBS=1` makes that a failure.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use finetp_backend_cuda::nccl::{DataType, Nccl};
use finetp_backend_cuda::nccl_comm::{Elem, NcclComm};
use finetp_core::backend::InProcessRendezvous;
use finetp_core::config::{Component, FinegrainedTpConfig, ParallelConfig};
use finetp_core::plan::Plan;
use finetp_testkit::harness::{self, Need};

const DP: usize = 4;
/// Rows per member of the MLP group (uneven) and the bytes of a row.
const ROWS: [usize; 2] = [3, 1];
const ROW: usize = 32;
/// Rows member `i` of the MLP group sends member `j` in the all-to-all.
const A2A: [[usize; 2]; 2] = [[1, 2], [3, 0]];
/// Fake device addresses (the stub only logs them).
const SEND: usize = 0x10_0000;
const RECV: usize = 0x20_0000;
const STAGING: usize = 0x30_0000;

fn main() {
    let dir = std::env::temp_dir().join(format!("finetp-cuda-stubs-{}", std::process::id()));
    let lib = dir.join("libnccl.so.2");
    let need = match build_stub(&dir, &lib) {
        Ok(()) => Need::present("cuda logging stub NCCL (gcc)", "FINETP_REQUIRE_CUDA_STUBS"),
        Err(why) => Need::absent("cuda logging stub NCCL (gcc)", "FINETP_REQUIRE_CUDA_STUBS", why),
    };
    let log = dir.join("calls.log");
    // SAFETY: set before any thread starts; NCCL is loaded (and the log opened) after this.
    unsafe {
        std::env::set_var("FINETP_NCCL_LIB", &lib);
        std::env::set_var("FINETP_STUB_LOG", &log);
    }
    harness::run(vec![harness::Case::new("cuda_stubs::nccl_groups_and_uneven_collectives_make_the_expected_calls", &[need], move || four_ranks(&lib, &log))])
}

fn build_stub(dir: &Path, lib: &Path) -> Result<(), String> {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/stubs/nccl.c");
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let cc = std::env::var("CC").unwrap_or_else(|_| "gcc".into());
    let out = Command::new(&cc).args(["-shared", "-fPIC", "-O1", "-Wall", "-Werror"]).arg(&src).arg("-o").arg(lib).output().map_err(|e| format!("cannot run {cc}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cc} failed on nccl.c: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(())
}

fn ensure(ok: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(msg()) }
}

fn plan() -> Result<Plan, String> {
    let mut fg = FinegrainedTpConfig::default();
    fg.set(Component::Mlp, Some(2));
    fg.set(Component::OProj, Some(4));
    Ok(Plan::new(&ParallelConfig::new(DP, 1, 1, false, fg).map_err(|e| e.to_string())?))
}

/// Each rank: its communicators in the plan's order, then the MLP group's collectives.
fn four_ranks(lib_path: &Path, log: &Path) -> Result<(), String> {
    let _ = std::fs::remove_file(log);
    let plan = plan()?;
    let lib: &'static Nccl = Box::leak(Box::new(Nccl::load().map_err(|e| e.to_string())?));
    ensure(lib.path == lib_path.to_string_lossy(), || format!("loaded {} instead of the stub", lib.path))?;
    // SAFETY: the stub's own export, `void finetp_stub_set_rank(int)`; the same file NCCL
    // was loaded from, so the same library instance.
    let stub = unsafe { libloading::Library::new(lib_path) }.map_err(|e| e.to_string())?;
    let set_rank: libloading::Symbol<'_, unsafe extern "C" fn(i32)> = unsafe { stub.get(b"finetp_stub_set_rank\0") }.map_err(|e| e.to_string())?;
    let set_rank = *set_rank;
    let rv = Arc::new(InProcessRendezvous::new());
    let mut names = Vec::new();
    let threads: Vec<_> = (0..DP)
        .map(|rank| {
            let specs = plan.group_specs(rank, Duration::from_secs(20)).ok_or("rank outside the plan")?;
            names.push(specs.iter().filter(|s| s.size() > 1).map(|s| (s.role.name(), s.size(), s.rank)).collect::<Vec<_>>());
            let rv = rv.clone();
            Ok(std::thread::spawn(move || -> Result<(), String> {
                // SAFETY: sets a thread-local in the stub.
                unsafe { set_rank(rank as i32) };
                let comms: Vec<NcclComm> = specs.iter().filter(|s| s.size() > 1).map(|s| NcclComm::connect(lib, s, rv.as_ref())).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
                let mlp = comms.iter().find(|c| c.spec().name().starts_with("mlp")).ok_or("no mlp communicator")?;
                collectives(mlp).map_err(|e| e.to_string())
            }))
        })
        .collect::<Result<_, String>>()?;
    for t in threads {
        t.join().map_err(|_| "a rank panicked".to_string())??;
    }
    let text = std::fs::read_to_string(log).map_err(|e| format!("reading {}: {e}", log.display()))?;
    check_log(&text, &names)
}

fn collectives(c: &NcclComm) -> Result<(), finetp_core::backend::CommError> {
    let me = c.spec().rank;
    let bytes: Vec<usize> = ROWS.iter().map(|r| r * ROW).collect();
    let stream = std::ptr::null_mut();
    // SAFETY: the stub dereferences nothing.
    unsafe {
        c.all_gather_v(SEND as *const _, RECV as *mut _, &bytes, Elem::BYTE, stream)?;
        let floats: Vec<usize> = bytes.iter().map(|b| b / 4).collect();
        c.reduce_scatter_v(SEND as *const _, RECV as *mut _, STAGING as *mut _, &floats, stream)?;
        let send: Vec<usize> = A2A[me].iter().map(|r| r * ROW).collect();
        let recv: Vec<usize> = (0..2).map(|j| A2A[j][me] * ROW).collect();
        c.all_to_all_v(SEND as *const _, &send, RECV as *mut _, &recv, Elem::BYTE, stream)?;
        c.all_gather_v(SEND as *const _, RECV as *mut _, &[ROW, ROW], Elem::BYTE, stream)?;
        c.reduce_scatter_v(SEND as *const _, RECV as *mut _, STAGING as *mut _, &[8, 8], stream)?;
        c.all_reduce_sum(RECV as *mut _, 5, DataType::Float32, stream)?;
    }
    Ok(())
}

/// `key=value` of a log line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

fn num(line: &str, key: &str) -> usize {
    field(line, key).and_then(|v| v.parse().ok()).unwrap_or(usize::MAX)
}

/// One communicator a rank must make: its group's role, size and the rank's member index.
type Want = (&'static str, usize, usize);

fn check_log(text: &str, names: &[Vec<Want>]) -> Result<(), String> {
    let mut by_rank: HashMap<usize, Vec<&str>> = HashMap::new();
    for l in text.lines() {
        by_rank.entry(num(l, "rank")).or_default().push(l);
    }
    // Communicators: one id per group, made by member 0; every member joins with its bytes.
    let made: HashMap<&str, &str> = text.lines().filter(|l| l.contains("ncclGetUniqueId")).map(|l| (field(l, "token").unwrap_or(""), field(l, "checksum").unwrap_or(""))).collect();
    let inits: Vec<&str> = text.lines().filter(|l| l.contains("ncclCommInitRank")).collect();
    // DP 4: mlp at 2 is two groups of two, o_proj at 4 one group of four, and the dp world one
    // of four: 4 ids, 2 + 2 + 4 + 4 = 12 joins.
    ensure(made.len() == 4 && inits.len() == 12, || format!("expected 4 ids and 12 joins, got {} and {}:\n{text}", made.len(), inits.len()))?;
    for l in &inits {
        let token = field(l, "token").unwrap_or("");
        ensure(made.get(token) == field(l, "checksum").as_ref(), || format!("{l}: joins with bytes no member 0 made"))?;
    }
    for (rank, want) in names.iter().enumerate() {
        let lines = by_rank.get(&rank).ok_or_else(|| format!("rank {rank} made no calls"))?;
        let joined: Vec<(usize, usize)> = lines.iter().filter(|l| l.contains("ncclCommInitRank")).map(|l| (num(l, "nranks"), num(l, "member"))).collect();
        let planned: Vec<(usize, usize)> = want.iter().map(|w| (w.1, w.2)).collect();
        ensure(joined == planned, || format!("rank {rank} joined (size, member) {joined:?}; its plan's groups, in order, are {want:?}"))?;
        for l in lines.iter().filter(|l| l.contains("ncclGetUniqueId")) {
            ensure(lines.iter().any(|i| i.contains("ncclCommInitRank") && field(i, "token") == field(l, "token") && num(i, "member") == 0), || format!("rank {rank} made id {l} but is not member 0 of its group"))?;
        }
    }
    let roles: Vec<Vec<&str>> = names.iter().map(|w| w.iter().map(|g| g.0).collect()).collect();
    ensure(roles.windows(2).all(|w| w[0] == w[1]), || format!("ranks' plans order their groups differently: {roles:?}"))?;
    // The MLP group's collectives, on each member.
    let mut sends: HashMap<(String, usize, usize), Vec<usize>> = HashMap::new();
    let mut recvs: HashMap<(String, usize, usize), Vec<usize>> = HashMap::new();
    for rank in 0..DP {
        let lines = &by_rank[&rank];
        let colls: Vec<&str> = lines.iter().copied().filter(|l| l.contains("ncclSend") || l.contains("ncclRecv") || l.contains("ncclGroup") || l.contains("ncclAll") || l.contains("ncclReduce")).collect();
        let me = colls.iter().find_map(|l| field(l, "member")).and_then(|m| m.parse::<usize>().ok()).ok_or_else(|| format!("rank {rank}: no collectives"))?;
        let ops: Vec<String> = colls.iter().map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string()).collect();
        let b = |r: usize| (r * ROW).to_string();
        // all-gather: send mine to both, receive each member's rows at its offset.
        let mut want = vec!["ncclGroupStart"];
        want.extend(["ncclSend", "ncclRecv", "ncclSend", "ncclRecv"]);
        want.push("ncclGroupEnd");
        // reduce-scatter: block j to member j, my block from each member into staging.
        want.push("ncclGroupStart");
        want.extend(["ncclSend", "ncclRecv", "ncclSend", "ncclRecv"]);
        want.push("ncclGroupEnd");
        // all-to-all: zero counts skipped.
        want.push("ncclGroupStart");
        let a2a: Vec<&str> = (0..2).flat_map(|j| [(A2A[me][j] > 0).then_some("ncclSend"), (A2A[j][me] > 0).then_some("ncclRecv")]).flatten().collect();
        want.extend(a2a);
        want.push("ncclGroupEnd");
        want.extend(["ncclAllGather", "ncclReduceScatter", "ncclAllReduce"]);
        ensure(ops == want, || format!("rank {rank} (member {me}): calls {ops:?}, expected {want:?}"))?;
        let ag = &colls[1..5];
        let off = [0, ROWS[0] * ROW];
        for j in 0..2 {
            let (s, r) = (ag[2 * j], ag[2 * j + 1]);
            ensure(num(s, "peer") == j && field(s, "count") == Some(&b(ROWS[me])) && num(s, "at") == SEND, || format!("rank {rank}: all-gather {s}"))?;
            ensure(num(r, "peer") == j && field(r, "count") == Some(&b(ROWS[j])) && num(r, "at") == RECV + off[j], || format!("rank {rank}: all-gather {r}"))?;
        }
        let rs = &colls[7..11];
        for j in 0..2 {
            let (s, r) = (rs[2 * j], rs[2 * j + 1]);
            ensure(num(s, "peer") == j && num(s, "count") == ROWS[j] * ROW / 4 && num(s, "at") == SEND + off[j], || format!("rank {rank}: reduce-scatter {s}"))?;
            ensure(num(r, "peer") == j && num(r, "count") == ROWS[me] * ROW / 4 && num(r, "at") == STAGING + j * ROWS[me] * ROW, || format!("rank {rank}: reduce-scatter {r}"))?;
        }
        let tail = &colls[colls.len() - 3..];
        ensure(num(tail[0], "count") == ROW && num(tail[1], "count") == 8 && num(tail[2], "count") == 5 && num(tail[2], "dtype") == 7, || format!("rank {rank}: even collectives {tail:?}"))?;
        for l in &colls {
            let token = field(l, "token").unwrap_or("").to_string();
            if l.contains("ncclSend") {
                sends.entry((token, me, num(l, "peer"))).or_default().push(num(l, "count"));
            } else if l.contains("ncclRecv") {
                recvs.entry((token, num(l, "peer"), me)).or_default().push(num(l, "count"));
            }
        }
    }
    ensure(sends == recvs, || format!("sends and receives do not pair up: sent {sends:?}, received {recvs:?}"))?;
    Ok(())
}
