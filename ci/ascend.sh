#!/usr/bin/env bash
# The Ascend job, on a machine without CANN or an NPU: libclang so bindgen runs (and must:
# FINETP_REQUIRE_BINDGEN=1) over finetp's own ACL/aclnn/HCCL declarations; the kept bindings
# must equal what bindgen made; a binary without the feature names the command that builds one
# with it, and that command works; `finetp run --backend ascend` without CANN exits non-zero
# with one line naming the missing library; the logging-stub test (two ranks, one MLP layer at
# size 2, the ACL/aclnn/HCCL call sequence) and the conformance suite (ignored, with the
# reason) run against the regenerated bindings.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
start=$(date +%s)
source ci/lib.sh

echo "== libclang (bindgen) and gcc (the stub libraries)"
apt_install libclang-dev clang gcc libc6-dev
export FINETP_REQUIRE_BINDGEN=1 FINETP_REQUIRE_ASCEND_STUBS=1
unset ASCEND_TOOLKIT_HOME ASCEND_HOME_PATH FINETP_ASCEND_INCLUDE

echo "== a binary without ascend names the command that builds one with it; that command works"
cargo build --release --locked -p finetp-cli
expect_build_command run --backend ascend

echo "== the kept bindings (for builds without libclang) equal bindgen's output"
for pair in ascend-sys:ascend.rs hccl-sys:hccl.rs; do
  crate=${pair%%:*}; file=${pair##*:}
  made="$(ls -t "$target_dir"/release/build/"$crate"-*/out/"$file" | head -1)"
  diff -u "bindings/$crate/src/generated/$file" "$made" > /dev/null \
    || { diff -u "bindings/$crate/src/generated/$file" "$made" | head -40; echo "FAIL: bindings/$crate/src/generated/$file is stale: copy $made over it"; exit 1; }
  echo "-- $crate: kept $file matches ($(wc -l < "$made") lines from bindgen)"
done

echo "== finetp run --backend ascend without CANN: non-zero, one line naming the library"
expect_one_error_line "cannot load libascendcl.so" env -u LD_LIBRARY_PATH "$finetp" run --backend ascend --max-tokens 4

echo "== the logging-stub call sequence and the conformance suite (ignored without an NPU)"
cargo test --locked -p finetp-backend-ascend --test stub_calls --test conformance 2>&1 | tee /tmp/ascend-tests.log | grep -E "ascend|test result" || true
grep -q "ascend_stubs::two_ranks_mlp_at_size_2_make_the_expected_calls ... ok" /tmp/ascend-tests.log || { echo "FAIL: the stub test did not pass"; exit 1; }
echo "== ci/ascend.sh took $(( $(date +%s) - start )) s"
