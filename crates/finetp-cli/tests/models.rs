//! `finetp run --model <dir>` on tiny random checkpoints of every supported architecture, each
//! written as a real `config.json` + `model.safetensors` + `tokenizer.json`: the model registry
//! picks the model from the config, and DP 4 with all four components at size 2, TP 2 x DP 2
//! with all four at size 2, and TP 4 give exactly the tokens of the unsharded single-rank run,
//! eager and graph, each rank holding the planned bytes. An architecture finetp does not
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
    let tokens = finetp_testkit::report::output_tokens(&v).expect("every request's token ids");
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
        // DP 4 with every component at size 2; TP 2 x DP 2 with every component at size 2
        // (4 parts each); TP 4 (more TP ranks than the 2 KV heads: KV heads replicated).
        // And the embedding alone at size 2 under TP 2 (Qwen2's tied lm_head then needs a shard of
        // its own).
        let emb_only = r#"{"finegrained_tp_config":{"embedding_tensor_parallel_size":2}}"#;
        let layouts: [&[&str]; 4] = [
            &["-d", "4", "--additional-config", ALL_AT_2],
            &["-d", "2", "-t", "2", "--additional-config", ALL_AT_2],
            &["-t", "4"],
            &["-d", "2", "-t", "2", "--additional-config", emb_only],
        ];
        for (layout, mode) in layouts.iter().flat_map(|l| ["eager", "graph"].map(|m| (*l, m))) {
            let args: Vec<&str> = layout.iter().copied().chain(["--mode", mode]).collect();
            let (sharded, report) = run(dir.path(), &args);
            assert_eq!(sharded, reference, "{arch}: {layout:?}, {mode}");
            // Every rank holds what the memory plan says, to the byte.
            let planned = report["planned_weight_bytes"].as_u64().expect("planned bytes");
            for r in report["ranks"].as_array().expect("ranks") {
                let held: u64 = r["weight_bytes"].as_array().expect("weight bytes").iter().map(|m| m["bytes"].as_u64().expect("bytes")).sum();
                assert_eq!(held, planned, "{arch}: {layout:?}: rank {} holds {held} bytes, the plan says {planned}", r["rank"]);
            }
            // ... and `finetp plan` says the same for the same layout (the checkpoints are f32).
            let out = Command::new(env!("CARGO_BIN_EXE_finetp")).args(["plan", "--json", "--dtype", "f32", "--model"]).arg(dir.path()).args(layout).output().expect("run finetp plan");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("plan JSON");
            let plan_total: u64 = v["memory"]["rows"].as_array().expect("rows").iter().map(|r| r["bytes"].as_u64().expect("bytes")).sum();
            assert_eq!(plan_total, planned, "{arch}: {layout:?}: finetp plan's per-rank total");
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

/// `--enable-expert-parallel` (TP 1) shards the routed experts over the DP world: DeepSeek V2
/// and V3 at DP 4 (one of the 4 experts per rank) and DP 2 (two), with every component at size
/// 2, give the single-rank tokens, eager and graph, and every rank holds what the memory plan
/// says to the byte. With TP > 1 the flag is refused (EP over DP x TP is not built yet).
#[test]
fn expert_parallelism_shards_the_experts_and_keeps_the_tokens() {
    for arch in [Architecture::DeepseekV2, Architecture::DeepseekV3] {
        let dir = tempfile::tempdir().expect("a temp dir");
        finetp_testkit::tiny::write(dir.path(), arch, 3).expect("write the checkpoint");
        let (reference, _) = run(dir.path(), &["-d", "1"]);
        let (_, replicated) = run(dir.path(), &["-d", "4", "--additional-config", ALL_AT_2]);
        let moe_bytes = |report: &serde_json::Value| -> u64 {
            let r = &report["ranks"][0]["weight_bytes"];
            r.as_array().expect("weight bytes").iter().filter(|m| m["module"] == "moe experts").map(|m| m["bytes"].as_u64().expect("bytes")).sum()
        };
        for (dp, mode) in [("4", "eager"), ("4", "graph"), ("2", "eager")] {
            let (tokens, report) = run(dir.path(), &["-d", dp, "--enable-expert-parallel", "--additional-config", ALL_AT_2, "--mode", mode]);
            assert_eq!(tokens, reference, "{arch}: DP {dp} + EP {dp}, {mode}");
            let planned = report["planned_weight_bytes"].as_u64().expect("planned bytes");
            for r in report["ranks"].as_array().expect("ranks") {
                let held: u64 = r["weight_bytes"].as_array().expect("weight bytes").iter().map(|m| m["bytes"].as_u64().expect("bytes")).sum();
                assert_eq!(held, planned, "{arch}: DP {dp} + EP: rank {} holds {held} bytes, the plan says {planned}", r["rank"]);
            }
            assert!(moe_bytes(&report) < moe_bytes(&replicated), "{arch}: EP {dp} holds {} MoE bytes, replicated {}", moe_bytes(&report), moe_bytes(&replicated));
        }
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    finetp_testkit::tiny::write(dir.path(), Architecture::DeepseekV3, 1).expect("write the checkpoint");
    let out = Command::new(env!("CARGO_BIN_EXE_finetp")).args(["run", "-d", "2", "-t", "2", "--enable-expert-parallel", "--model"]).arg(dir.path()).output().expect("run finetp");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("expert parallelism over DP x TP ranks is not implemented yet") && !err.contains("rank 0 device"), "{err}");
}
