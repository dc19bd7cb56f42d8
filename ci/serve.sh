#!/usr/bin/env bash
# The serve job: `finetp serve` from the outside, with the official `openai` Python client
# (pinned, from PyPI): a streamed chat completion at DP 4 with all four components at size 2
# equals `finetp run`'s text, its log-probabilities and echo prompt log-probabilities equal an
# unsharded server's within 1e-4, and a loopback load test (64 clients, 256 requests, some
# hanging up) answers every request once, each as it is answered alone (ci/serve_check.py).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
start=$(date +%s)
source ci/lib.sh
echo "== release build of the CLI"
cargo build --release --locked -p finetp-cli
echo "== the openai client (pinned)"
venv="$target_dir/serve-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv" 2>/dev/null || { rm -rf "$venv"; apt_install python3-venv; python3 -m venv "$venv"; }
"$venv/bin/pip" install -q openai==3.63.0
echo "== serve check"
"$venv/bin/python" ci/serve_check.py "$target_dir/release/finetp"
echo "== ci/serve.sh took $(( $(date +%s) - start )) s"
