//! The battery: hostile and broken inputs through the real binary — checkpoints that are
//! truncated, bit-flipped, mis-shaped, incomplete, duplicated or hold NaN/Inf; configs that are
//! malformed or describe impossible sizes; layouts and flags out of any range. Each must be
//! refused with exit code 2 and one `error:` line naming what is wrong (or, where the input is
//! legal, complete), and none may panic, abort or hang.
//!
//! Inputs: a tiny safetensors Llama written by the testkit, and the tiny GGUF Llama the `gguf`
//! package wrote for the fuzz corpus (`tools/fuzz_seeds.py`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use finetp_core::backend::HostTensor;
use finetp_core::config::Architecture;
use finetp_core::shard::InMemoryWeights;
use finetp_testkit::tiny;

/// Longer than any case takes (the slowest, a tiny model's load and two tokens, takes well under
/// a second); a case still running then has hung.
const DEADLINE: Duration = Duration::from_secs(60);

struct Outcome {
    code: Option<i32>,
    stderr: String,
}

/// Runs `finetp args…`, killing it at [`DEADLINE`] (a failure: a hang).
fn finetp(args: &[&str]) -> Outcome {
    let mut child = Command::new(env!("CARGO_BIN_EXE_finetp"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start finetp");
    let mut pipe = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = pipe.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for finetp") {
            break s;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("finetp {args:?} hung: still running after {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Outcome { code: status.code(), stderr: reader.join().expect("stderr reader") }
}

/// No panic, abort or signal, whatever the exit code.
fn no_crash(args: &[&str], o: &Outcome) {
    assert!(o.code.is_some(), "finetp {args:?} was killed by a signal (an abort?): {}", o.stderr);
    assert!(!o.stderr.contains("panicked") && o.code != Some(101), "finetp {args:?} panicked: {}", o.stderr);
    assert!(!o.stderr.contains("memory allocation of"), "finetp {args:?} aborted on an allocation: {}", o.stderr);
}

/// Exit 2, one `error:` line, containing every needle once.
fn refused(args: &[&str], needles: &[&str]) {
    let o = finetp(args);
    no_crash(args, &o);
    assert_eq!(o.code, Some(2), "finetp {args:?} must be refused as bad input (exit 2): {}", o.stderr);
    let errors: Vec<&str> = o.stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "finetp {args:?}: one error line, got: {}", o.stderr);
    for n in needles {
        assert_eq!(errors[0].matches(n).count(), 1, "finetp {args:?}: the error names {n:?} exactly once: {}", errors[0]);
    }
}

/// Exit 0 or 2 (a flip may land where the input stays legal), and no crash.
fn survived(args: &[&str]) -> Option<i32> {
    let o = finetp(args);
    no_crash(args, &o);
    assert!(matches!(o.code, Some(0 | 2)), "finetp {args:?}: exit {:?}: {}", o.code, o.stderr);
    o.code
}

fn run_args(model: &Path) -> Vec<String> {
    ["run", "--raw-prompt", "--prompt", "t1 t2 t3", "--max-tokens", "2", "--model"].iter().map(|s| s.to_string()).chain([model.display().to_string()]).collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A tiny Llama checkpoint in `dir` whose weights `edit` changed first.
fn checkpoint(dir: &Path, edit: impl FnOnce(&mut InMemoryWeights)) {
    tiny::write(dir, Architecture::Llama, 1).expect("write the tiny checkpoint");
    let mut w = tiny::weights(&tiny::config(Architecture::Llama), 1);
    edit(&mut w);
    tiny::write_safetensors(&dir.join("model.safetensors"), &w).expect("write the weights");
}

fn set_value(w: &mut InMemoryWeights, name: &str, at: usize, v: f32) {
    let t = &w.tensors[name];
    let mut data = t.to_f32_vec().expect("f32");
    data[at] = v;
    let shape = t.shape.clone();
    w.insert(name, HostTensor::f32(data, &shape).expect("same shape"));
}

const UP: &str = "model.layers.1.mlp.up_proj.weight";

#[test]
fn broken_safetensors_checkpoints_are_refused_naming_the_tensor() {
    let root = tempfile::tempdir().expect("a temp dir");
    let case = |name: &str, edit: &dyn Fn(&mut InMemoryWeights)| -> PathBuf {
        let d = root.path().join(name);
        checkpoint(&d, edit);
        d
    };
    let d = case("missing", &|w| {
        w.tensors.remove(UP);
    });
    refused(&strs(&run_args(&d)), &[UP, "not found"]);
    let d = case("transposed", &|w| {
        let t = w.tensors[UP].clone();
        w.insert(UP, HostTensor::f32(t.to_f32_vec().unwrap(), &[t.shape[1], t.shape[0]]).unwrap());
    });
    refused(&strs(&run_args(&d)), &[UP, "has shape [32, 64]", "[64, 32]"]);
    for (name, v, text) in [("nan", f32::NAN, "holds NaN (element 5 of the slice read)"), ("inf", f32::INFINITY, "holds inf (element 5 of the slice read)"), ("ninf", f32::NEG_INFINITY, "holds -inf")] {
        let d = case(name, &|w| set_value(w, UP, 5, v));
        refused(&strs(&run_args(&d)), &[UP, text]);
    }
    // The same tensor in two files of one checkpoint: refused, naming both.
    let d = case("duplicated", &|_| {});
    let mut extra = InMemoryWeights::default();
    extra.insert("model.norm.weight", HostTensor::f32(vec![1.0; 32], &[32]).unwrap());
    tiny::write_safetensors(&d.join("model-extra.safetensors"), &extra).unwrap();
    refused(&strs(&run_args(&d)), &["tensor model.norm.weight is also in", "model-extra.safetensors"]);
    // A config that disagrees with the weights it sits beside.
    let d = case("config", &|_| {});
    let cfg = tiny::config_json(Architecture::Llama).replace(r#""intermediate_size":64"#, r#""intermediate_size":48"#);
    std::fs::write(d.join("config.json"), cfg).unwrap();
    refused(&strs(&run_args(&d)), &["has shape [64, 32], the model config implies [48, 32]"]);
}

#[test]
fn truncated_and_bit_flipped_safetensors_never_crash() {
    let root = tempfile::tempdir().expect("a temp dir");
    let good = root.path().join("good");
    checkpoint(&good, |_| {});
    let bytes = std::fs::read(good.join("model.safetensors")).unwrap();
    let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let d = root.path().join("cut");
    checkpoint(&d, |_| {});
    for cut in [0, 4, 8, 9, header / 2, header, header + 1, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(d.join("model.safetensors"), &bytes[..cut]).unwrap();
        refused(&strs(&run_args(&d)), &["model.safetensors"]);
    }
    // One flipped bit at a spread of places in the header and the data.
    let (mut refusals, mut runs) = (0, 0);
    for at in (0..header).step_by(header / 24).chain((header..bytes.len()).step_by(bytes.len() / 8)) {
        let mut b = bytes.clone();
        b[at] ^= 0x40;
        std::fs::write(d.join("model.safetensors"), &b).unwrap();
        match survived(&strs(&run_args(&d))) {
            Some(2) => refusals += 1,
            _ => runs += 1,
        }
    }
    assert!(refusals > 0 && runs > 0, "{refusals} flips refused, {runs} ran: the flips should reach both");
}

/// The tiny GGUF Llama of the fuzz corpus.
fn tiny_gguf() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../finetp-fuzz/tests/__fuzz__/gguf/corpus/tiny-llama.gguf")
}

#[test]
fn gguf_files_run_or_are_refused_never_crash() {
    let good = tiny_gguf();
    let o = finetp(&strs(&run_args(&good)));
    assert_eq!(o.code, Some(0), "the tiny GGUF runs: {}", o.stderr);
    let bytes = std::fs::read(&good).unwrap();
    let root = tempfile::tempdir().expect("a temp dir");
    let path = root.path().join("m.gguf");
    let args = run_args(&path);
    let file = finetp_loader::gguf::GgufFile::open(&good).unwrap();
    let data_start = file.tensors.values().map(|t| t.offset).min().unwrap();
    for cut in [0, 3, 4, 8, 24, data_start / 3, data_start - 1, data_start, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        refused(&strs(&args), &["m.gguf"]);
    }
    for at in (0..data_start).step_by(data_start / 40).chain((data_start..bytes.len()).step_by((bytes.len() - data_start) / 8)) {
        let mut b = bytes.clone();
        b[at] ^= 0x10;
        std::fs::write(&path, &b).unwrap();
        survived(&strs(&args));
    }
    // A NaN block scale (f16 0x7e00) in the first block of a Q8_0 tensor.
    let t = &file.tensors["blk.0.attn_q.weight"];
    let mut b = bytes.clone();
    b[t.offset..t.offset + 2].copy_from_slice(&[0x00, 0x7e]);
    std::fs::write(&path, &b).unwrap();
    refused(&strs(&args), &["model.layers.0.self_attn.q_proj.weight", "holds NaN (element 0 of the slice read)"]);
}

#[test]
fn hostile_configs_are_refused() {
    let root = tempfile::tempdir().expect("a temp dir");
    let d = root.path().join("m");
    checkpoint(&d, |_| {});
    let args = run_args(&d);
    let base = tiny::config_json(Architecture::Llama);
    let with = |from: &str, to: &str| {
        assert!(base.contains(from), "{from}");
        base.replace(from, to)
    };
    for (config, needle) in [
        ("not json".to_string(), "config.json"),
        ("[1, 2]".to_string(), "must be a JSON object"),
        (with(r#""hidden_size":32"#, r#""hidden_size":1099511627776"#), "hidden_size"),
        (with(r#""hidden_size":32"#, r#""hidden_size":-32"#), "hidden_size"),
        (with(r#""hidden_size":32"#, r#""hidden_size":32.5"#), "hidden_size"),
        (with(r#""hidden_size":32"#, r#""hidden_size":"32""#), "hidden_size"),
        (with(r#""hidden_size":32"#, r#""hidden_size":16777216"#), "weights, more than the"),
        (with(r#""num_attention_heads":4"#, r#""num_attention_heads":0"#), "num_attention_heads"),
        (with(r#""num_key_value_heads":2"#, r#""num_key_value_heads":3"#), "num_key_value_heads"),
        (with(r#""num_hidden_layers":2"#, r#""num_hidden_layers":18446744073709551615"#), "num_hidden_layers"),
        (with(r#""max_position_embeddings":256"#, r#""max_position_embeddings":0"#), "max_position_embeddings"),
        (with(r#""rms_norm_eps":1e-5"#, r#""rms_norm_eps":"small""#), "rms_norm_eps"),
        (with(r#""model_type":"llama""#, r#""model_type":"gpt_neox""#).replace("LlamaForCausalLM", "GPTNeoXForCausalLM"), "unsupported architecture"),
        (format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)), "config.json"),
    ] {
        std::fs::write(d.join("config.json"), &config).unwrap();
        eprintln!("config: {}", &config[..config.len().min(200)]);
        refused(&strs(&args), &[needle]);
        let plan = ["plan", "-d", "2", "--model", &d.display().to_string()].map(str::to_string);
        refused(&strs(&plan), &[needle]);
    }
}

#[test]
fn layouts_and_flags_out_of_range_are_refused() {
    let root = tempfile::tempdir().expect("a temp dir");
    let d = root.path().join("m");
    checkpoint(&d, |_| {});
    let model = d.display().to_string();
    let max = usize::MAX.to_string();
    let fg = |k: &str, v: &str| format!(r#"{{"finegrained_tp_config":{{"{k}":{v}}}}}"#);
    let deep = format!("{}{}", "{\"a\":".repeat(20_000), "}".repeat(20_000));
    for (flags, needle) in [
        (vec!["-d", &max], "more than the 1048576 ranks"),
        (vec!["-d", "1048576", "-t", "2"], "more than the 1048576 ranks"),
        (vec!["-d", "4294967296", "-t", "4294967296"], "more than the 1048576 ranks"),
        (vec!["-d", "0"], "--data-parallel-size must be >= 1"),
        (vec!["-d", "-1"], "-1"),
        (vec!["-d", "2", "--additional-config", &fg("mlp_tensor_parallel_size", &max)], "mlp_tensor_parallel_size"),
        (vec!["-d", "2", "--additional-config", &fg("mlp_tensor_parallel_size", "1e400")], "number out of range"),
        (vec!["-d", "2", "--additional-config", &fg("mlp_tensor_parallel_size", "-2")], "mlp_tensor_parallel_size"),
        (vec!["-d", "2", "--additional-config", &fg("mlp_tensor_parallel_size", "3")], "mlp_tensor_parallel_size"),
        (vec!["-d", "2", "--additional-config", &deep], "--additional-config"),
        (vec!["-d", "2", "--additional-config", "@/nonexistent/finetp.json"], "/nonexistent/finetp.json"),
    ] {
        for cmd in ["plan", "run"] {
            let mut args = vec![cmd, "--model", &model];
            if cmd == "run" {
                args.extend(["--raw-prompt", "--prompt", "t1", "--max-tokens", "1"]);
            }
            args.extend(flags.iter().copied());
            // clap refuses malformed numbers itself (exit 2 with its own usage text).
            let o = finetp(&args);
            no_crash(&args, &o);
            assert_eq!(o.code, Some(2), "finetp {args:?}: {}", o.stderr);
            assert!(o.stderr.contains(needle), "finetp {args:?}: stderr lacks {needle:?}: {}", o.stderr);
        }
    }
}

#[test]
fn a_per_device_memory_budget_is_checked_before_loading() {
    let root = tempfile::tempdir().expect("a temp dir");
    let d = root.path().join("m");
    checkpoint(&d, |_| {});
    let mut args = run_args(&d);
    args.extend(["-d".into(), "2".into()]);
    for (budget, needle) in [("0.0001", "more than --memory-budget-gib 0.0001"), ("0", "must be a positive number"), ("nan", "must be a positive number"), ("-1", "must be a positive number")] {
        let mut a = strs(&args);
        let flag = format!("--memory-budget-gib={budget}");
        a.push(&flag);
        refused(&a, &[needle]);
    }
    let mut a = strs(&args);
    a.extend(["--memory-budget-gib", "1"]);
    let o = finetp(&a);
    assert_eq!(o.code, Some(0), "a budget the run fits in: {}", o.stderr);
}
