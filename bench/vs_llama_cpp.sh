#!/usr/bin/env bash
# Decode (and prefill) speed of finetp against llama.cpp on the same GGUF, the same threads,
# prompt and token count, alternating in one run; prints each round and the ratio.
#
#   bench/vs_llama_cpp.sh [--model FILE.gguf] [--threads 2] [--tokens 64] [--rounds 5]
#                         [--prefill-tokens 4000 [--chunk 512] [--prefill-only]]
#
# Installs llama-cpp-python (pinned; built from its sdist with GGML_NATIVE, a few minutes the
# first time) into $FINETP_BENCH_VENV (default target/bench-venv) and builds finetp --release.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${FINETP_BENCH_VENV:-$root/target/bench-venv}"
pin="llama-cpp-python==0.3.36"
if ! (cd / && "$venv/bin/python" -c "import llama_cpp") 2>/dev/null; then
    echo "installing $pin into $venv (builds llama.cpp from source)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    # The ISA finetp uses, named (GGML_NATIVE would also turn on AMX, whose kernel crashes in
    # VMs that do not hand the AMX tile state to guests).
    isa="-DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
    grep -q avx_vnni /proc/cpuinfo && isa="$isa -DGGML_AVX_VNNI=ON"
    grep -q avx512_vnni /proc/cpuinfo && isa="$isa -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON"
    CMAKE_ARGS="-DGGML_NATIVE=OFF $isa -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" \
        "$venv/bin/pip" install -q --no-cache-dir "$pin"
fi
(cd "$root" && cargo build --release -q -p finetp-cli)
exec "$venv/bin/python" "$root/bench/vs_llama_cpp.py" --finetp "$root/target/release/finetp" "$@"
