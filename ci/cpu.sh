#!/usr/bin/env bash
# The CPU job: the whole test suite (the README's test command), then the README's main
# command (SmolLM2 with fine-grained TP) and the DeepSeek-R1 plan.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
cargo --version
python3 -m pip --version || { echo "python3 with pip is needed to fetch the default model"; exit 1; }
echo "== tests (README: cargo test --workspace --locked)"
cargo test --workspace --locked
echo "== main command (README)"
cargo run --release --locked -p finetp-cli -- run --data-parallel-size 4 --tensor-parallel-size 1 \
  --additional-config '{"finegrained_tp_config":{"embedding_tensor_parallel_size":4,"lmhead_tensor_parallel_size":4,"oproj_tensor_parallel_size":2,"mlp_tensor_parallel_size":2}}' \
  --max-tokens 48
echo "== plan (README)"
cargo run --release --locked -p finetp-cli -- plan --data-parallel-size 32 --tensor-parallel-size 1 --enable-expert-parallel \
  --additional-config '{"finegrained_tp_config":{"embedding_tensor_parallel_size":8,"lmhead_tensor_parallel_size":8,"oproj_tensor_parallel_size":8,"mlp_tensor_parallel_size":8}}' \
  --model crates/finetp-core/tests/data/deepseek-r1.config.json --quantization w8a8
