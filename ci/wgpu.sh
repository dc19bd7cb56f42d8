#!/usr/bin/env bash
# The wgpu job: Debian's software Vulkan driver (Mesa lavapipe); the command a binary without
# wgpu prints for `--backend wgpu`, run as printed; the conformance suite and wgpu's own cases
# on lavapipe (a missing adapter fails instead of being listed as ignored); the examples and
# `finetp run --backend wgpu` with DP 2 and every fine-grained component at size 2.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
start=$(date +%s)

source ci/lib.sh

echo "== software Vulkan driver (mesa-vulkan-drivers: lavapipe)"
apt_install mesa-vulkan-drivers libvulkan1
ls /usr/share/vulkan/icd.d/
# Mesa's window-system layer warns on every device without it; compute does not need it.
if [ -z "${XDG_RUNTIME_DIR:-}" ] || [ ! -d "${XDG_RUNTIME_DIR}" ]; then
  XDG_RUNTIME_DIR="$(mktemp -d)"
  chmod 700 "$XDG_RUNTIME_DIR"
  export XDG_RUNTIME_DIR
fi
# From here on a missing adapter (or model) is a failure, not an ignored case.
export FINETP_REQUIRE_WGPU=1 FINETP_REQUIRE_MODEL=1

echo "== a binary without wgpu names the command that builds one with it; that command works"
cargo build --release --locked -p finetp-cli
set +e
msg="$("$finetp" run --backend wgpu --data-parallel-size 2 --additional-config "$layout" 2>&1 >/dev/null)"
code=$?
set -e
echo "$msg"
[ "$code" -eq 2 ] || { echo "expected exit code 2, got $code"; exit 1; }
run_printed_build_command "$code" "$msg"

echo "== wgpu conformance suite and wgpu's own cases (the adapter is printed first)"
cargo test --locked -p finetp-backend-wgpu

echo "== example on wgpu (random Qwen2 checkpoint, DP 4, sharded == replicated)"
cargo run --release --locked -p finetp-examples --features wgpu --example qwen -- --backend wgpu

echo "== finetp run --backend wgpu (DP 2, all components at size 2), with the binary the printed command built"
"$finetp" run --backend wgpu --data-parallel-size 2 --tensor-parallel-size 1 --additional-config "$layout" --max-tokens 32

echo "== ci/wgpu.sh took $(( $(date +%s) - start )) s"
