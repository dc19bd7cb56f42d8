#!/usr/bin/env bash
# The check to run on an Ascend machine (910B/910C with CANN installed and `set_env.sh`
# sourced): nothing here has run on an NPU yet, and this is what says whether it works.
#   1. finetp's ACL/HCCL declarations against the installed CANN headers (check_headers.sh);
#   2. a build with --features ascend, bindgen over CANN's own headers;
#   3. the whole conformance suite on the NPU against the CPU reference, a missing device a
#      failure (FINETP_REQUIRE_ASCEND=1, FINETP_REQUIRE_MODEL=1: SmolLM2 at DP 2 included);
#   4. SmolLM2 at DP 2 with all four components at size 2 on two NPUs (HCCL), greedy, against
#      the same run on the CPU: the tokens must be the same.
# Send the output (or open an issue with it): docs/backends.md records what has been run.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -n "${ASCEND_TOOLKIT_HOME:-${ASCEND_HOME_PATH:-}}" ] || { echo "source CANN's set_env.sh first (ASCEND_TOOLKIT_HOME is unset)"; exit 2; }
echo "== 1. declarations against CANN's headers"
tools/ascend/check_headers.sh
echo "== 2. build"
cargo build --release --locked -p finetp-cli --features ascend
echo "== 3. conformance suite on the NPU"
FINETP_REQUIRE_ASCEND=1 FINETP_REQUIRE_MODEL=1 cargo test --release --locked -p finetp-backend-ascend --test conformance
echo "== 4. SmolLM2, DP 2, every component at size 2: NPU tokens against CPU tokens"
layout='{"finegrained_tp_config":{"embedding_tensor_parallel_size":2,"lmhead_tensor_parallel_size":2,"oproj_tensor_parallel_size":2,"mlp_tensor_parallel_size":2}}'
tokens() { target/release/finetp run --backend "$1" -d 2 --additional-config "$layout" --max-tokens 32 --json \
  | python3 -c 'import json,sys; print([o["tokens"] for o in json.load(sys.stdin)["outputs"]])'; }
npu=$(tokens ascend); cpu=$(tokens cpu)
echo "ascend: $npu"; echo "cpu:    $cpu"
[ "$npu" = "$cpu" ] && echo "== the NPU gives the CPU's tokens" || { echo "== FAIL: the tokens differ"; exit 1; }
