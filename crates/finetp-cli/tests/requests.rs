//! Requests checked before anything runs, through the real binary on a tiny checkpoint
//! (`max_position_embeddings` 256): each bad request exits 2 with a message naming the value and
//! the limit, never a panic; the legal edge cases complete.

use std::path::Path;
use std::process::{Command, Output};

fn finetp(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_finetp"))
        .args(["run", "--raw-prompt", "--prompt", "t1 t2 t3", "--model"])
        .arg(dir)
        .args(args)
        .output()
        .expect("run finetp")
}

fn rejects(dir: &Path, args: &[&str], needles: &[&str]) {
    let out = finetp(dir, args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: stderr lacks {n:?}:\n{err}");
    }
    assert!(!err.contains("panicked") && !err.contains("rank 0 device"), "{args:?} must fail before any rank starts: {err}");
}

#[test]
fn bad_requests_are_refused_before_any_rank_starts() {
    let dir = tempfile::tempdir().expect("a temp dir");
    finetp_testkit::tiny::write(dir.path(), finetp_core::config::Architecture::Llama, 1).expect("write the checkpoint");
    let d = dir.path();
    rejects(d, &["--max-tokens", "254"], &["3 prompt tokens + max_tokens 254 = 257 exceed the maximum model length 256 (the model's max_position_embeddings)"]);
    rejects(d, &["--max-tokens", &usize::MAX.to_string()], &["exceed the maximum model length 256"]);
    rejects(d, &["--max-model-len", "8", "--max-tokens", "6"], &["= 9 exceed the maximum model length 8 (--max-model-len)"]);
    rejects(d, &["--max-model-len", "300"], &["--max-model-len 300 exceeds the model's max_position_embeddings (256)"]);
    for (flag, value, rule) in [
        ("--temperature", "nan", "temperature = NaN"),
        ("--temperature", "inf", "temperature = inf"),
        ("--temperature=-1", "", "temperature = -1"),
        ("--top-p", "0", "top_p = 0 is out of range: a number in (0, 1]"),
        ("--top-p", "2", "top_p = 2"),
        ("--top-p", "nan", "top_p = NaN"),
    ] {
        let args: Vec<&str> = [flag, value].into_iter().filter(|a| !a.is_empty()).collect();
        rejects(d, &args, &[rule]);
    }
    for t in ["0", "nan", "-3", "1e9"] {
        rejects(d, &[&format!("--collective-timeout={t}")], &["--collective-timeout must be a number of seconds in (0, 86400]"]);
    }
}

#[test]
fn legal_edge_cases_complete() {
    let dir = tempfile::tempdir().expect("a temp dir");
    finetp_testkit::tiny::write(dir.path(), finetp_core::config::Architecture::Llama, 1).expect("write the checkpoint");
    // Exactly the model length, a zero-token request, and a short collective timeout.
    for args in [&["--max-tokens", "253", "--json"][..], &["--max-tokens", "0", "--json"], &["--max-tokens", "2", "--collective-timeout", "5", "--json"]] {
        let out = finetp(dir.path(), args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
        let n = v["outputs"][0]["tokens"].as_array().expect("tokens").len();
        let want: usize = args[1].parse().expect("a count");
        // Generation may stop early at an EOS id, never run past max_tokens.
        assert!(n <= want && (want == 0) == (n == 0), "{args:?}: {n} tokens");
    }
}
