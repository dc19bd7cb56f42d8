#!/usr/bin/env bash
# The CPU job: the whole test suite (the README's test command) and the README's main command.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
cargo --version
echo "== tests (README: cargo test --workspace --locked)"
cargo test --workspace --locked
echo "== main command (README)"
cargo run --release --locked -p finetp-cli -- plan --data-parallel-size 32 --tensor-parallel-size 1 --enable-expert-parallel \
  --additional-config '{"finegrained_tp_config":{"embedding_tensor_parallel_size":8,"lmhead_tensor_parallel_size":8,"oproj_tensor_parallel_size":8,"mlp_tensor_parallel_size":8}}' \
  --model crates/finetp-core/tests/data/deepseek-r1.config.json --quantization w8a8
