//! `finetp run --model <dir>` on tiny random checkpoints of every supported architecture, each
//! written as a real `config.json` + `model.safetensors` + `tokenizer.json`: the model registry
//! picks the model from the config, and DP 4 with all four components at size 2 gives exactly
//! the tokens of the unsharded single-rank run, eager and graph. An architecture finetp does not
//! know is bad input (exit 2) that lists the supported ones.

use std::path::Path;
use std::process::Command;

use finetp_core::config::Architecture;

const ALL_AT_2: &str = r#"{"finegrained_tp_config":{"embedding_tensor_parallel_size":2,"lmhead_tensor_parallel_size":2,"oproj_tensor_parallel_size":2,"mlp_tensor_parallel_size":2}}"#;
const PROMPTS: [&str; 4] = ["t1 t2 t3", "t5 t8 t13 t21 t34 t55 t89", "t40", "t7 t7 t7 t9 t11"];

/// `finetp run --json` on the checkpoint in `dir`: each request's tokens, and the report.
fn run(dir: &Path, args: &[&str]) -> (Vec<Vec<u64>>, serde_json::Value) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_finetp"));
    cmd.args(["run", "--json", "--raw-prompt", "--max-tokens", "9", "--model"]).arg(dir).args(args);
    for p in PROMPTS {
        cmd.args(["--prompt", p]);
    }
    let out = cmd.output().expect("run finetp");
    assert!(out.status.success(), "finetp run {args:?} on {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    let tokens = v["outputs"].as_array().expect("outputs").iter().map(|o| o["tokens"].as_array().expect("tokens").iter().map(|t| t.as_u64().expect("id")).collect()).collect();
    (tokens, v)
}

#[test]
fn every_architecture_runs_from_its_checkpoint_and_sharded_equals_unsharded() {
    let archs = [Architecture::Llama, Architecture::Mistral, Architecture::Qwen2, Architecture::Qwen3, Architecture::DeepseekV2, Architecture::DeepseekV3];
    for arch in archs {
        let dir = tempfile::tempdir().expect("a temp dir");
        finetp_testkit::tiny::write(dir.path(), arch, 3).expect("write the checkpoint");
        let (reference, _) = run(dir.path(), &["-d", "1"]);
        assert!(reference.iter().all(|t| t.len() == 9), "{arch}: every request generates its 9 tokens: {reference:?}");
        eprintln!("{arch}: {reference:?}");
        for mode in ["eager", "graph"] {
            let (sharded, report) = run(dir.path(), &["-d", "4", "--mode", mode, "--additional-config", ALL_AT_2]);
            assert_eq!(sharded, reference, "{arch}: DP 4, all four components at size 2, {mode}");
            // The registry built the architecture's own model: its memory report has its modules.
            let modules: Vec<&str> = report["ranks"][0]["weight_bytes"].as_array().expect("weight bytes").iter().filter_map(|m| m["module"].as_str()).collect();
            let want = if arch.is_deepseek() { "attention (MLA, norms)" } else { "attention (q/kv, norms)" };
            assert!(modules.contains(&want), "{arch}: modules {modules:?}");
        }
    }
}

#[test]
fn an_unknown_architecture_lists_the_supported_ones() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let cfg = r#"{"architectures":["GPT2LMHeadModel"],"model_type":"gpt2","vocab_size":97,"hidden_size":32,"num_attention_heads":4}"#;
    std::fs::write(dir.path().join("config.json"), cfg).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_finetp")).args(["run", "--model"]).arg(dir.path()).output().expect("run finetp");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for needle in ["GPT2LMHeadModel", "LlamaForCausalLM (llama)", "MistralForCausalLM", "Qwen3ForCausalLM", "DeepseekV2ForCausalLM", "DeepseekV3ForCausalLM (deepseek_v3)"] {
        assert!(err.contains(needle), "stderr lacks {needle}: {err}");
    }
}
