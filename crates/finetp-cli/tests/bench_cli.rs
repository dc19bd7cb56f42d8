//! `finetp bench --calibrate` end to end on a tiny model: it measures every configured
//! component replicated and sharded, writes a profile that `--profile` accepts, and prints the
//! calibrated predictions next to the measurements. (The accuracy of those predictions on
//! SmolLM2 is a measurement, reported in docs/cost-model.md, not a timed test.)

use std::process::Command;

use finetp_cost::HardwareProfile;

#[test]
fn calibrate_writes_a_profile_the_cost_model_reads() {
    let dir = std::env::temp_dir().join(format!("finetp-bench-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.json");
    std::fs::write(
        &config,
        r#"{"model_type":"llama","vocab_size":500,"hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,
            "num_attention_heads":4,"num_key_value_heads":2,"tie_word_embeddings":true}"#,
    )
    .unwrap();
    let profile = dir.join("calibrated.toml");
    let fg = r#"{"finegrained_tp_config":{"embedding_tensor_parallel_size":2,"lmhead_tensor_parallel_size":2,"oproj_tensor_parallel_size":2,"mlp_tensor_parallel_size":2}}"#;
    let out = Command::new(env!("CARGO_BIN_EXE_finetp"))
        .args(["bench", "-d", "2", "--warmup", "1", "--repeats", "3", "--batch-size", "2", "--additional-config", fg])
        .arg("--model")
        .arg(&config)
        .arg("--calibrate")
        .arg(&profile)
        .output()
        .expect("run finetp bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "finetp bench failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    for c in ["embedding", "lm_head", "o_proj", "mlp"] {
        assert!(stdout.matches(c).count() >= 3, "{c} is measured replicated and sharded and predicted:\n{stdout}");
    }
    assert!(stdout.contains("Largest |error|"), "{stdout}");
    let p = HardwareProfile::from_path(&profile).expect("the written profile parses and validates");
    assert_eq!(p.name, "cpu-local");
    assert!(p.memory_bandwidth_gbps > 0.0 && p.compute_tflops > 0.0 && p.collective_alpha_us > 0.0, "{p:?}");
    let plan = Command::new(env!("CARGO_BIN_EXE_finetp"))
        .args(["plan", "-d", "2", "--estimate", "--additional-config", fg, "--profile"])
        .arg(&profile)
        .arg("--model")
        .arg(&config)
        .output()
        .expect("run finetp plan");
    assert!(plan.status.success(), "plan --estimate with the calibrated profile: {}", String::from_utf8_lossy(&plan.stderr));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bench_without_a_sharded_component_is_bad_input() {
    let out = Command::new(env!("CARGO_BIN_EXE_finetp")).args(["bench", "-d", "2"]).output().expect("run finetp bench");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least one fine-grained size"));
}
