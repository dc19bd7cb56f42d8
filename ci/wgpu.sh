#!/usr/bin/env bash
# The wgpu job: Debian's software Vulkan driver (Mesa lavapipe); the command a binary without
# wgpu prints for `--backend wgpu`, run as printed; the example and `finetp run --backend wgpu`
# with DP 2 and every fine-grained component at size 2. The conformance suite and wgpu's own
# cases run on lavapipe in the README test command (ci/cpu.sh), with a missing adapter a
# failure: a separate `cargo test -p finetp-backend-wgpu` would resolve features apart from the
# workspace's and rebuild most of the test tree.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
start=$(date +%s)

source ci/lib.sh

echo "== software Vulkan driver (mesa-vulkan-drivers: lavapipe)"
use_lavapipe
# A missing model is a failure, not an ignored case.
export FINETP_REQUIRE_MODEL=1

echo "== a binary without wgpu names the command that builds one with it; that command works"
cargo build --release --locked -p finetp-cli
expect_build_command run --backend wgpu --data-parallel-size 2 --additional-config "$layout"

echo "== example on wgpu (random Qwen2 checkpoint, DP 4, sharded == replicated)"
# Built with the CLI's wgpu build in one invocation, so it reuses that build's dependencies.
cargo build --release --locked -p finetp-cli -p finetp-examples --features finetp-cli/wgpu,finetp-examples/wgpu --bin finetp --example qwen
"$target_dir/release/examples/qwen" --backend wgpu

echo "== finetp run --backend wgpu (DP 2, all components at size 2), with the binary the printed command built"
"$finetp" run --backend wgpu --data-parallel-size 2 --tensor-parallel-size 1 --additional-config "$layout" --max-tokens 32

echo "== ci/wgpu.sh took $(( $(date +%s) - start )) s"
