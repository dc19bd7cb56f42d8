//! Ranks as processes under `mpirun` (Open MPI), on SmolLM2: the tokens of the threaded run
//! with one rank per process, with two ranks per process, and over TCP only (the multi-node
//! transport); a rank killed, or stopped with SIGSTOP, mid-generation ends every other process
//! with finetp's own error naming it, well inside mpirun's own time limit.
//!
//! Needs `mpirun` on the PATH, a `finetp` built with `--features mpi` (this test binary is
//! then built with it too) and the default model: without them the cases are listed as
//! ignored with the reason, and `FINETP_REQUIRE_MPI=1` (CI's `ci/mpi.sh`) makes a missing
//! MPI a failure.

use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use finetp_testkit::harness::{self, Case, Need};

const ALL2: &str = r#"{"finegrained_tp_config":{"embedding_tensor_parallel_size":2,"lmhead_tensor_parallel_size":2,"oproj_tensor_parallel_size":2,"mlp_tensor_parallel_size":2}}"#;
const PROMPTS: [&str; 4] = [
    "What is the capital of France?",
    "Write one sentence about the ocean.",
    "Name three primary colors.",
    "Why is the sky blue?",
];
/// mpirun's own limit: a test that needs it has failed (finetp must end the job first).
const MPIRUN_TIMEOUT_S: u64 = 240;

fn mpi_need() -> Arc<Need> {
    const WHAT: &str = "MPI (mpirun, and finetp built with --features mpi)";
    const ENV: &str = "FINETP_REQUIRE_MPI";
    if !cfg!(feature = "mpi") {
        return Need::absent(WHAT, ENV, "this finetp is built without the `mpi` feature (cargo test -p finetp-cli --features mpi)".into());
    }
    match Command::new("mpirun").arg("--version").output() {
        Ok(o) if o.status.success() => Need::present(WHAT, ENV),
        Ok(o) => Need::absent(WHAT, ENV, format!("mpirun --version failed: {}", String::from_utf8_lossy(&o.stderr))),
        Err(e) => Need::absent(WHAT, ENV, format!("no mpirun on the PATH ({e}); Debian: apt-get install openmpi-bin libopenmpi-dev")),
    }
}

/// `mpirun -np N [extra mpirun flags] finetp run …` (root allowed: CI runs as root).
fn mpirun(np: usize, mpi_flags: &[&str], run_flags: &[&str]) -> Command {
    let mut cmd = Command::new("mpirun");
    cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1").env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    cmd.args(["--oversubscribe", "--timeout", &MPIRUN_TIMEOUT_S.to_string(), "-np", &np.to_string()]);
    cmd.args(mpi_flags).arg(env!("CARGO_BIN_EXE_finetp")).arg("run").args(run_flags);
    cmd
}

fn run_flags(max_tokens: &str) -> Vec<String> {
    let mut f: Vec<String> = ["--json", "-d", "4", "--additional-config", ALL2, "--max-tokens", max_tokens].map(String::from).to_vec();
    for p in PROMPTS {
        f.extend(["--prompt".to_string(), p.to_string()]);
    }
    f
}

fn tokens(out: &Output, what: &str) -> Result<Vec<Vec<u64>>, String> {
    if !out.status.success() {
        return Err(format!("{what} failed ({:?}): {}", out.status.code(), String::from_utf8_lossy(&out.stderr)));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("{what}: {e}: {}", String::from_utf8_lossy(&out.stdout)))?;
    let ranks = v["ranks"].as_array().ok_or("no ranks")?;
    if ranks.len() != 4 || ranks.iter().any(|r| r["weight_bytes"].as_array().is_none_or(|m| m.is_empty())) {
        return Err(format!("{what}: expected every rank's measured memory in the report, got {}", v["ranks"]));
    }
    finetp_testkit::report::output_tokens(&v).map_err(|e| format!("{what}: {e}"))
}

/// DP 4, all four components at size 2: 4 processes, 2 processes x 2 ranks, and 4 processes
/// over TCP only, each gives exactly the threaded run's tokens; and mixed sizes (embedding and
/// MLP at 4 spanning both processes, lm_head and o_proj at 2 inside each) as 2 x 2, where
/// groups of different sizes share the same pair of processes.
fn processes_give_the_tokens_of_the_threaded_run() -> Result<(), String> {
    let flags = run_flags("32");
    let threaded = Command::new(env!("CARGO_BIN_EXE_finetp")).arg("run").args(&flags).output().map_err(|e| e.to_string())?;
    let reference = tokens(&threaded, "the threaded run")?;
    if reference.len() != 4 || reference.iter().any(Vec::is_empty) {
        return Err(format!("the threaded run must answer all 4 prompts: {reference:?}"));
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let two_per: Vec<&str> = flags.iter().copied().chain(["--ranks-per-process", "2"]).collect();
    let cases: [(&str, usize, &[&str], &[&str]); 3] = [
        ("4 processes", 4, &[], &flags),
        ("2 processes x 2 ranks", 2, &[], &two_per),
        ("4 processes over TCP only", 4, &["--mca", "btl", "tcp,self"], &flags),
    ];
    for (what, np, mpi_flags, run) in cases {
        let out = mpirun(np, mpi_flags, run).output().map_err(|e| e.to_string())?;
        let got = tokens(&out, what)?;
        if got != reference {
            return Err(format!("{what}: {got:?} differs from the threaded run's {reference:?}"));
        }
    }
    let mixed = r#"{"finegrained_tp_config":{"embedding_tensor_parallel_size":4,"lmhead_tensor_parallel_size":2,"oproj_tensor_parallel_size":2,"mlp_tensor_parallel_size":4}}"#;
    let mixed_flags: Vec<String> = run_flags("32").into_iter().map(|f| if f == ALL2 { mixed.to_string() } else { f }).collect();
    let mixed_flags: Vec<&str> = mixed_flags.iter().map(String::as_str).collect();
    let threaded = Command::new(env!("CARGO_BIN_EXE_finetp")).arg("run").args(&mixed_flags).output().map_err(|e| e.to_string())?;
    let reference = tokens(&threaded, "the threaded run, mixed sizes")?;
    let two_per: Vec<&str> = mixed_flags.iter().copied().chain(["--ranks-per-process", "2"]).collect();
    let got = tokens(&mpirun(2, &[], &two_per).output().map_err(|e| e.to_string())?, "mixed sizes, 2 x 2")?;
    if got != reference {
        return Err(format!("mixed sizes, 2 x 2: {got:?} differs from the threaded run's {reference:?}"));
    }
    Ok(())
}

/// The pid of world rank `rank`'s process among `mpirun`'s children.
fn pid_of_rank(mpirun: u32, rank: usize) -> Option<u32> {
    let want = format!("OMPI_COMM_WORLD_RANK={rank}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let ppid: u32 = status.lines().find_map(|l| l.strip_prefix("PPid:"))?.trim().parse().ok()?;
        let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        (ppid == mpirun && env.split(|&b| b == 0).any(|v| v == want.as_bytes())).then_some(pid)
    })
}

/// Starts a long generation on 4 processes, waits until every rank is generating, then does
/// `fault` to rank 2's process; returns mpirun's output and how long it took after the fault.
fn fault_mid_generation(signal: &str, collective_timeout_s: u64) -> Result<(Output, Duration), String> {
    let flags = run_flags("2000");
    let mut flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let timeout = collective_timeout_s.to_string();
    flags.extend(["--collective-timeout", &timeout]);
    let mut child: Child = mpirun(4, &[], &flags)
        .env("RUST_LOG", "finetp_engine=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut stderr = child.stderr.take().ok_or("no stderr")?;
    // Read stderr on a thread; watch it for every rank's "generating" line.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            let chunk = String::from_utf8_lossy(&buf[..n]).to_string();
            all.push_str(&chunk);
            let _ = tx.send(chunk);
        }
        all
    });
    let started = Instant::now();
    let mut seen = String::new();
    while (0..4).any(|r| !seen.contains(&format!("rank {r}: weights loaded"))) {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(c) => seen.push_str(&c),
            Err(_) if started.elapsed() > Duration::from_secs(120) => {
                let _ = child.kill();
                return Err(format!("the ranks never started generating: {seen}"));
            }
            Err(_) => {}
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let pid = pid_of_rank(child.id(), 2).ok_or("cannot find rank 2's process")?;
    let status = Command::new("kill").args([signal, &pid.to_string()]).status().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("kill {signal} {pid} failed"));
    }
    let faulted = Instant::now();
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let out_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        s
    });
    let status = child.wait().map_err(|e| e.to_string())?;
    let took = faulted.elapsed();
    let stderr = reader.join().map_err(|_| "stderr reader panicked")?;
    let stdout = out_reader.join().map_err(|_| "stdout reader panicked")?;
    Ok((Output { status, stdout, stderr: stderr.into_bytes() }, took))
}

/// The checks both faults share: a non-zero exit well before mpirun's own limit, finetp's
/// error (not a panic, not mpirun's time limit) naming rank 2, and an error from every
/// surviving process.
fn ended_by_finetp(out: &Output, took: Duration, limit: Duration, names: &str) -> Result<(), String> {
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        return Err(format!("mpirun exited 0 after the fault: {err}"));
    }
    if took > limit || err.contains("time limit") || err.contains("panicked") {
        return Err(format!("the job took {took:?} (limit {limit:?}) or ended by mpirun's time limit / a panic: {err}"));
    }
    if !err.lines().any(|l| l.starts_with("error: ") && l.contains(names)) {
        return Err(format!("no finetp error naming {names:?}: {err}"));
    }
    for r in [0, 1, 3] {
        let own = format!("rank {r}:");
        let reported = err.lines().any(|l| (l.starts_with("error: ") && l.contains(&own)) || l.contains(&format!("process {r}: terminated by the launcher")));
        if !reported {
            return Err(format!("surviving rank {r} printed no error of its own: {err}"));
        }
    }
    Ok(())
}

fn a_killed_rank_ends_every_other_process_with_an_error_naming_it() -> Result<(), String> {
    let (out, took) = fault_mid_generation("-KILL", 60)?;
    ended_by_finetp(&out, took, Duration::from_secs(20), "(global rank 2)")
}

fn a_stopped_rank_ends_every_other_process_within_the_collective_timeout() -> Result<(), String> {
    let timeout = 5;
    let (out, took) = fault_mid_generation("-STOP", timeout)?;
    ended_by_finetp(&out, took, Duration::from_secs(timeout * 4), "global ranks [2]")
}

/// `--ranks-per-process` outside mpirun is bad input naming the mpirun command (any build).
fn ranks_per_process_without_mpirun_is_refused() -> Result<(), String> {
    let out = Command::new(env!("CARGO_BIN_EXE_finetp"))
        .args(["run", "-d", "4", "--ranks-per-process", "2", "--max-tokens", "1"])
        .env_remove("OMPI_COMM_WORLD_SIZE")
        .env_remove("PMI_SIZE")
        .env_remove("PMIX_SIZE")
        .output()
        .map_err(|e| e.to_string())?;
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.code() != Some(2) || !err.contains("was not started by mpirun") || !err.contains("mpirun -np 2") {
        return Err(format!("expected exit 2 naming `mpirun -np 2`: {:?} {err}", out.status.code()));
    }
    Ok(())
}

/// A binary built without MPI, started as one of several processes (mpirun's environment),
/// says so and names the command that builds one with it, with exit code 2.
fn a_binary_without_mpi_under_mpirun_names_the_build_command() -> Result<(), String> {
    let out = Command::new(env!("CARGO_BIN_EXE_finetp"))
        .args(["run", "-d", "4", "--max-tokens", "1"])
        .env("OMPI_COMM_WORLD_SIZE", "4")
        .output()
        .map_err(|e| e.to_string())?;
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.code() != Some(2) || !err.contains("built without MPI support") || !err.contains("cargo build --release -p finetp-cli --features mpi") {
        return Err(format!("expected exit 2 naming the build command: {:?} {err}", out.status.code()));
    }
    Ok(())
}

fn main() {
    let mpi = mpi_need();
    let (model, _) = Need::default_model();
    let mut cases = vec![Case::new("ranks_per_process_without_mpirun_is_refused", &[], ranks_per_process_without_mpirun_is_refused)];
    if !cfg!(feature = "mpi") {
        cases.push(Case::new("a_binary_without_mpi_under_mpirun_names_the_build_command", &[], a_binary_without_mpi_under_mpirun_names_the_build_command));
    }
    cases.extend([
        Case::new("processes_give_the_tokens_of_the_threaded_run", &[mpi.clone(), model.clone()], processes_give_the_tokens_of_the_threaded_run),
        Case::new("a_killed_rank_ends_every_other_process_with_an_error_naming_it", &[mpi.clone(), model.clone()], a_killed_rank_ends_every_other_process_with_an_error_naming_it),
        Case::new("a_stopped_rank_ends_every_other_process_within_the_collective_timeout", &[mpi, model], a_stopped_rank_ends_every_other_process_within_the_collective_timeout),
    ]);
    harness::run(cases);
}
