#!/usr/bin/env bash
# The wgpu job: Debian's software Vulkan driver (Mesa lavapipe), the wgpu test suite on it
# (a missing adapter fails instead of skipping), then `finetp run --backend wgpu` with DP 2 and
# every fine-grained component at size 2.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
start=$(date +%s)

echo "== software Vulkan driver (mesa-vulkan-drivers: lavapipe)"
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
if installed mesa-vulkan-drivers && installed libvulkan1; then
  echo "already installed"
else
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends mesa-vulkan-drivers libvulkan1
fi
ls /usr/share/vulkan/icd.d/
# Mesa's window-system layer warns on every device without it; compute does not need it.
if [ -z "${XDG_RUNTIME_DIR:-}" ] || [ ! -d "${XDG_RUNTIME_DIR}" ]; then
  XDG_RUNTIME_DIR="$(mktemp -d)"
  chmod 700 "$XDG_RUNTIME_DIR"
  export XDG_RUNTIME_DIR
fi
# From here on a missing adapter is a failure, not a skip.
export FINETP_REQUIRE_WGPU=1

echo "== adapter (the test prints it and fails if there is none)"
cargo test --locked -p finetp-backend-wgpu --test adapter -- --nocapture

echo "== wgpu test suite"
cargo test --locked -p finetp-backend-wgpu

echo "== finetp run --backend wgpu (DP 2, all components at size 2)"
cargo run --release --locked -p finetp-cli --features wgpu -- run --backend wgpu --data-parallel-size 2 --tensor-parallel-size 1 \
  --additional-config '{"finegrained_tp_config":{"embedding_tensor_parallel_size":2,"lmhead_tensor_parallel_size":2,"oproj_tensor_parallel_size":2,"mlp_tensor_parallel_size":2}}' \
  --max-tokens 32

echo "== ci/wgpu.sh took $(( $(date +%s) - start )) s"
