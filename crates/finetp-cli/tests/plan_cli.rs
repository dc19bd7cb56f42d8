//! `finetp plan` end to end: every validation rule fed through the CLI (exit code and message),
//! and the seed's DeepSeek-R1 memory table.

use std::process::{Command, Output};

const DEEPSEEK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../finetp-core/tests/data/deepseek-r1.config.json");

fn finetp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_finetp")).args(args).output().expect("run finetp")
}

/// Asserts exit code 2 (bad input) and that stderr names every needle.
fn rejects(args: &[&str], needles: &[&str]) {
    let out = finetp(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "args {args:?}: stderr {err}");
    for n in needles {
        assert!(err.contains(n), "args {args:?}: stderr lacks {n:?}:\n{err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

fn fg(json_body: &str) -> String {
    format!(r#"{{"finegrained_tp_config":{{{json_body}}}}}"#)
}

#[test]
fn malformed_json_reports_line_and_column() {
    rejects(&["plan", "-d", "4", "--additional-config", "{\"finegrained_tp_config\": {"], &["not valid JSON", "line 1, column"]);
}

#[test]
fn unknown_key_names_the_key_and_the_valid_ones() {
    rejects(
        &["plan", "-d", "4", "--additional-config", &fg(r#""mlp_tp_size":2"#)],
        &["\"mlp_tp_size\"", "mlp_tensor_parallel_size", "embedding_tensor_parallel_size"],
    );
}

#[test]
fn non_integer_and_non_positive_sizes() {
    rejects(&["plan", "-d", "4", "--additional-config", &fg(r#""oproj_tensor_parallel_size":2.5"#)], &["oproj_tensor_parallel_size", "2.5", "positive integer"]);
    rejects(&["plan", "-d", "4", "--additional-config", &fg(r#""oproj_tensor_parallel_size":"2""#)], &["oproj_tensor_parallel_size", "positive integer"]);
    rejects(&["plan", "-d", "4", "--additional-config", &fg(r#""lmhead_tensor_parallel_size":0"#)], &["lmhead_tensor_parallel_size = 0", ">= 1"]);
    rejects(&["plan", "-d", "4", "--additional-config", &fg(r#""lmhead_tensor_parallel_size":-2"#)], &["lmhead_tensor_parallel_size = -2", ">= 1"]);
    rejects(&["plan", "-d", "4", "--additional-config", r#"{"finegrained_tp_config":[8]}"#], &["finegrained_tp_config must be a JSON object"]);
}

#[test]
fn size_must_fit_and_divide_data_parallel() {
    rejects(&["plan", "-d", "4", "--additional-config", &fg(r#""mlp_tensor_parallel_size":8"#)], &["mlp_tensor_parallel_size = 8", "exceeds --data-parallel-size 4"]);
    rejects(&["plan", "-d", "12", "--additional-config", &fg(r#""embedding_tensor_parallel_size":8"#)], &["embedding_tensor_parallel_size = 8", "does not divide --data-parallel-size 12"]);
    rejects(&["plan", "-d", "0"], &["--data-parallel-size must be >= 1"]);
}

#[test]
fn sizes_must_divide_the_model_shapes() {
    // DeepSeek-R1: padded vocab 129280, o_proj width 128*128 = 16384, dense intermediate 18432.
    rejects(&["plan", "-d", "3", "--model", DEEPSEEK, "--additional-config", &fg(r#""embedding_tensor_parallel_size":3"#)], &["embedding_tensor_parallel_size = 3", "padded vocabulary", "129280"]);
    rejects(&["plan", "-d", "3", "--model", DEEPSEEK, "--additional-config", &fg(r#""lmhead_tensor_parallel_size":3"#)], &["lmhead_tensor_parallel_size = 3", "129280"]);
    rejects(&["plan", "-d", "3", "--model", DEEPSEEK, "--additional-config", &fg(r#""oproj_tensor_parallel_size":3"#)], &["oproj_tensor_parallel_size = 3", "o_proj input width", "16384"]);
    rejects(&["plan", "-d", "5", "--model", DEEPSEEK, "--additional-config", &fg(r#""mlp_tensor_parallel_size":5"#)], &["mlp_tensor_parallel_size = 5", "intermediate_size", "18432"]);
}

/// Standard TP's rules, and fine-grained sizes composed with it (a component splits in TP x
/// size parts), are checked by `plan` as `run` checks them.
#[test]
fn tensor_parallel_rules_name_the_dimension() {
    rejects(&["plan", "-t", "3", "--model", DEEPSEEK], &["--tensor-parallel-size 3 does not divide the model's num_attention_heads (128)"]);
    // 129280 = 2^8 x 505: size 64 alone divides it, 64 x TP 8 = 512 parts do not.
    rejects(
        &["plan", "-d", "64", "-t", "8", "--model", DEEPSEEK, "--additional-config", &fg(r#""lmhead_tensor_parallel_size":64"#)],
        &["lmhead_tensor_parallel_size = 64 under --tensor-parallel-size 8 splits the lm_head in 512 parts", "129280"],
    );
    let ok = finetp(&["plan", "-d", "4", "-t", "2", "--model", DEEPSEEK, "--additional-config", &fg(r#""oproj_tensor_parallel_size":4"#)]);
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success() && text.contains("o_proj     size 4   (x TP 2 = 8 parts): [0,2,4,6] [1,3,5,7]") && text.contains("tp         size 2  : [0..1]"), "{text}");
}

/// Pipeline parallelism is not implemented: `plan`, `run` and `bench` refuse it alike, before
/// reading any model.
#[test]
fn pipeline_parallelism_is_refused_by_every_command() {
    for cmd in ["plan", "run", "bench"] {
        rejects(&[cmd, "-d", "2", "--pipeline-parallel-size", "2"], &["--pipeline-parallel-size 2 is not supported", "pipeline parallelism is not implemented"]);
    }
    rejects(&["bench", "-d", "2", "-t", "3"], &["finetp bench times components at --tensor-parallel-size 1 (got 3)"]);
}

#[test]
fn bad_model_and_config_paths() {
    rejects(&["plan", "-d", "2", "--model", "/nonexistent/model"], &["/nonexistent/model", "cannot read model config"]);
    rejects(&["plan", "-d", "2", "--additional-config", "@/nonexistent.json"], &["/nonexistent.json"]);
    let dir = std::env::temp_dir().join(format!("finetp-plan-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), "{\"model_type\": \"llama\",\n \"vocab_size\": }").unwrap();
    rejects(&["plan", "-d", "2", "--model", dir.to_str().unwrap()], &["config.json", "line 2"]);
    std::fs::write(dir.join("ft.json"), fg(r#""mlp_tensor_parallel_size":2"#)).unwrap();
    let out = finetp(&["plan", "-d", "2", "--additional-config", &format!("@{}", dir.join("ft.json").display())]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("mlp        size 2  : [0..1]"));
    std::fs::remove_dir_all(&dir).ok();
}

/// The seed's table: DeepSeek-R1-W8A8, DP32 + EP32, every component at size 8.
#[test]
fn deepseek_r1_savings_match_the_seed_within_10_percent() {
    let cfg = fg(r#""embedding_tensor_parallel_size":8,"lmhead_tensor_parallel_size":8,"oproj_tensor_parallel_size":8,"mlp_tensor_parallel_size":8"#);
    let out = finetp(&[
        "plan", "--data-parallel-size", "32", "--tensor-parallel-size", "1", "--enable-expert-parallel",
        "--additional-config", &cfg, "--model", DEEPSEEK, "--quantization", "w8a8", "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let saving = |module: &str| {
        let row = v["memory"]["rows"].as_array().unwrap().iter().find(|r| r["module"] == module).unwrap();
        (row["baseline_bytes"].as_f64().unwrap() - row["bytes"].as_f64().unwrap()) / (1u64 << 30) as f64
    };
    for (module, seed) in [("o_proj", 5.8), ("lm_head", 1.51), ("dense_mlp", 0.9), ("embedding", 1.51)] {
        let got = saving(module);
        assert!((got - seed).abs() / seed <= 0.10, "{module}: {got:.3} GiB vs seed {seed} GiB");
    }
    assert_eq!(v["plan"]["components"][0]["groups"][1], serde_json::json!([8, 9, 10, 11, 12, 13, 14, 15]));

    // The table form carries the same numbers.
    let out = finetp(&["plan", "-d", "32", "--enable-expert-parallel", "--additional-config", &cfg, "--model", DEEPSEEK, "--quantization", "w8a8"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("o_proj                   8        6.675         0.837     5.838"), "{text}");
}

#[test]
fn other_top_level_keys_warn_but_work() {
    let out = finetp(&["plan", "-d", "2", "--additional-config", r#"{"ascend_scheduler_config":{},"finegrained_tp_config":{"mlp_tensor_parallel_size":2}}"#]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ascend_scheduler_config"));
}

/// `--estimate` on the seed's scenario: the memory column within 10% and the TPOT directions
/// of o_proj (degrades), lm_head and MLP (improve); `--auto` prints a config ready to paste.
#[test]
fn estimate_and_auto_on_the_seed_scenario() {
    let cfg = fg(r#""embedding_tensor_parallel_size":8,"lmhead_tensor_parallel_size":8,"oproj_tensor_parallel_size":8,"mlp_tensor_parallel_size":8"#);
    let base = ["plan", "-d", "32", "--enable-expert-parallel", "--model", DEEPSEEK, "--quantization", "w8a8", "--profile", "ascend-910b", "--batch-size", "24"];
    let mut args = base.to_vec();
    args.extend(["--additional-config", &cfg, "--estimate", "--json"]);
    let out = finetp(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = |c: &str| v["rows"].as_array().unwrap().iter().find(|r| r["component"] == c).unwrap().clone();
    for (c, seed) in [("o_proj", 5.8), ("lm_head", 1.51), ("mlp", 0.9), ("embedding", 1.51)] {
        let got = row(c)["memory_saved_bytes"].as_f64().unwrap() / (1u64 << 30) as f64;
        assert!((got - seed).abs() / seed <= 0.10, "{c}: {got:.3} GiB vs seed {seed}");
    }
    assert!(row("o_proj")["net_tpot_delta_s"].as_f64().unwrap() > 0.0);
    assert!(row("lm_head")["net_tpot_delta_s"].as_f64().unwrap() < 0.0);
    assert!(row("mlp")["net_tpot_delta_s"].as_f64().unwrap() < 0.0);

    // The per-rank totals with and without EP (each without and with fine-grained TP): the EP
    // row is the memory table's total line; without EP every rank holds all 256 experts.
    let out = finetp(&["plan", "-d", "32", "--enable-expert-parallel", "--model", DEEPSEEK, "--quantization", "w8a8", "--additional-config", &cfg]);
    let text = String::from_utf8_lossy(&out.stdout);
    let nums = |prefix: &str| -> Vec<f64> {
        let line = text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no line {prefix:?} in {text}"));
        line[prefix.len()..].split_whitespace().filter_map(|w| w.parse().ok()).collect()
    };
    let (total, with_ep, without_ep) = (nums("total"), nums("with expert parallelism (EP 32)"), nums("without expert parallelism"));
    assert_eq!(with_ep, total[..2], "{text}");
    // Fine-grained TP shards no expert: it saves the same bytes with or without EP.
    assert!(without_ep[0] > 15.0 * with_ep[0] && (without_ep[0] - without_ep[1] - total[2]).abs() < 2e-3, "{text}");
    let mut args = base.to_vec();
    args.push("--auto");
    let out = finetp(&args);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("--additional-config '{\"finegrained_tp_config\":"), "{text}");
    let mut args = base.to_vec();
    args.extend(["--auto", "--memory-budget-gib", "5"]);
    rejects(&args, &["GiB"]);
    let mut args = base.to_vec();
    args[9] = "/nonexistent.toml";
    args.push("--estimate");
    rejects(&args, &["nonexistent.toml"]);
}

/// Backends behind a cargo feature say how to get them, in one line naming the exact command
/// (before any model is fetched); `ci/wgpu.sh` runs the command this prints and uses its binary.
#[test]
fn a_backend_that_is_not_compiled_in_says_which_command_builds_it() {
    #[cfg(not(feature = "wgpu"))]
    for cmd in ["run", "bench"] {
        rejects(&[cmd, "--backend", "wgpu", "-d", "2", "--additional-config", &fg(r#""mlp_tensor_parallel_size":2"#)], &["not compiled into this binary", "`cargo build --release --locked -p finetp-cli --features wgpu`"]);
    }
    #[cfg(not(feature = "ascend"))]
    rejects(&["run", "--backend", "ascend", "--max-tokens", "1"], &["not compiled into this binary", "`cargo build --release --locked -p finetp-cli --features ascend`"]);
    #[cfg(not(feature = "cuda"))]
    rejects(&["run", "--backend", "cuda", "--max-tokens", "1"], &["not compiled into this binary", "`cargo build --release --locked -p finetp-cli --features cuda`"]);
}
