#!/usr/bin/env bash
# The fuzz job: each parser's bolero target (crates/finetp-fuzz: GGUF, safetensors, config.json,
# --additional-config) under libFuzzer, coverage-guided, for a bounded time each
# (FINETP_FUZZ_SECONDS, default 30), starting from the committed corpus. Stable Rust: cargo-bolero
# instruments with sancov and no sanitizer (`--sanitizer NONE`), so no nightly flag is needed; the
# fuzz profile keeps overflow checks, so an overflow is a crash. A crash fails the job and leaves
# its input in crates/finetp-fuzz/tests/__fuzz__/<name>/crashes/, which `cargo test`
# replays as a regression case once committed. The targets' plain-test runs (corpus + random
# inputs) are part of the README test command in ci/cpu.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
start=$(date +%s)
source ci/lib.sh

echo "== a C++ compiler, for libFuzzer's sources (bolero-libfuzzer builds them)"
apt_install g++
echo "== cargo-bolero (crates.io, pinned), into the target directory"
tools="$target_dir/tools"
if ! "$tools/bin/cargo-bolero" --version 2>/dev/null | grep -q "0.13.4"; then
  cargo install cargo-bolero --version 0.13.4 --locked --no-default-features --features libfuzzer --root "$tools"
fi
export PATH="$tools/bin:$PATH"
secs="${FINETP_FUZZ_SECONDS:-30}"
for t in gguf safetensors config_json additional_config; do
  echo "== fuzz $t for ${secs} s"
  # The corpus grows in a scratch copy: CI fuzzes from the committed seeds and keeps nothing
  # but crashes.
  work="$target_dir/fuzz-corpus/$t"
  rm -rf "$work" && mkdir -p "$work"
  cp -r "crates/finetp-fuzz/tests/__fuzz__/$t/corpus/." "$work/"
  # libFuzzer's progress lines (one per new input) are left out of the log; its summary,
  # warnings and any crash report stay.
  cargo bolero test -p finetp-fuzz --sanitizer NONE --target-dir "$target_dir/fuzz" \
    --corpus-dir "$work" -T "${secs}s" "$t" 2>&1 | grep -vE '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse|RELOAD)'
  echo "-- $t: corpus $(ls "$work" | wc -l) inputs after ${secs} s"
done
echo "== ci/fuzz.sh took $(( $(date +%s) - start )) s"
