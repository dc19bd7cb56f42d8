#!/usr/bin/env bash
# The one script for a machine with an NVIDIA GPU (the device tool's H100/H200: driver 580 /
# CUDA 13.0, torch's CUDA wheels, no cargo and no network). Three modes:
#   ci/cuda-device.sh --build     here: build the binaries it runs into .devbin/ (release:
#                                 finetp with --features cuda, the conformance suite, the
#                                 SmolLM2-shaped check, the decode_tpot benchmark); carry that
#                                 folder (`run` with carry [".devbin"], < 64 MiB).
#   ci/cuda-device.sh             on the GPU machine, from the repository root:
#     1. the GPU, driver and libraries (NVRTC, cuBLASLt and NCCL from the CUDA wheels);
#     2. the conformance suite on the GPU against the CPU reference (FINETP_REQUIRE_CUDA=1);
#     3. a SmolLM2-shaped random model (made on the spot) at DP 4, all four components at size
#        2, on one GPU (single-GPU path), against the CPU: logits and tokens, eager and graph;
#     4. measurements: decode TPOT graph vs eager and fine-grained vs replicated (decode_tpot);
#        `finetp bench` sharded vs replicated per component and GEMM probes, fitted into an
#        h200 cost profile (--calibrate), predictions beside measurements; `finetp plan`'s
#        per-rank memory for the same layout, beside the weight bytes decode_tpot measured.
#     Everything it prints and the fitted profile go to $OUT (the device tool's folder) or
#     target/cuda-device/. It should take under 5 minutes with start-up.
#   ci/cuda-device.sh --dry-run   CI, no GPU: --build, then every step above with the same
#                                 binaries and arguments; each must get as far as opening
#                                 the GPU and say that there is none (ignored, skipped, or
#                                 exit 1 naming libcuda), and the carried folder must fit.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-run}"
start=$(date +%s)
bin=".devbin"
layout='{"finegrained_tp_config":{"embedding_tensor_parallel_size":2,"lmhead_tensor_parallel_size":2,"oproj_tensor_parallel_size":2,"mlp_tensor_parallel_size":2}}'

build() {
  export CARGO_TERM_COLOR=never
  mkdir -p "$bin"
  cargo build --release --locked -p finetp-cli --features cuda
  local target
  target="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
  cp "$target/release/finetp" "$bin/finetp"
  # The test and bench executables, by name, from cargo's own report of what it built.
  cargo test --release --locked -p finetp-backend-cuda --test conformance --test smollm2_shaped --bench decode_tpot --no-run --message-format=json \
    | python3 -c '
import json, shutil, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] in ("conformance", "smollm2_shaped", "decode_tpot"):
        shutil.copy(m["executable"], sys.argv[1] + "/" + m["target"]["name"])
        print("  " + m["target"]["name"] + " <- " + m["executable"])
' "$bin"
  for f in finetp conformance smollm2_shaped decode_tpot; do [ -x "$bin/$f" ] || { echo "FAIL: $bin/$f was not built"; exit 1; }; done
  local kib
  kib=$(du -sk "$bin" | cut -f1)
  echo "$bin: $((kib / 1024)) MiB"
  [ "$kib" -lt $((64 * 1024)) ] || { echo "FAIL: $bin is over the device tool's 64 MiB"; exit 1; }
}

# The SmolLM2-135M shapes (no weights: finetp bench and plan use random ones or none).
smollm2_config() {
  mkdir -p "$1"
  cat > "$1/config.json" <<'JSON'
{"architectures":["LlamaForCausalLM"],"model_type":"llama","vocab_size":49152,"hidden_size":576,"intermediate_size":1536,
 "num_hidden_layers":30,"num_attention_heads":9,"num_key_value_heads":3,"rms_norm_eps":1e-5,"rope_theta":100000.0,
 "max_position_embeddings":8192,"tie_word_embeddings":true,"torch_dtype":"bfloat16"}
JSON
}

# `step NAME CMD...`: runs CMD; in a dry run it must end in the no-GPU answer instead.
step() {
  local name="$1"; shift
  echo "== $name"
  if [ "$mode" != "--dry-run" ]; then
    "$@" 2>&1 | tee -a "$out/log.txt"
    return "${PIPESTATUS[0]}"
  fi
  set +e
  local text code
  text="$("$@" 2>&1)"
  code=$?
  set -e
  printf '%s\n' "$text" | tail -3
  if [ "$code" -eq 0 ] && grep -qE "no cuda device|skipped: cuda backend unavailable" <<<"$text"; then return 0; fi
  if [ "$code" -eq 1 ] && grep -q "cannot load libcuda.so.1" <<<"$text" && ! grep -q panicked <<<"$text"; then return 0; fi
  if [ "$code" -eq 0 ] && [ "$name" = "plan" ]; then return 0; fi
  echo "FAIL (dry run): '$name' did not stop at the missing GPU (exit $code)"
  exit 1
}

case "$mode" in
  --build) build; exit 0 ;;
  --dry-run) build; out="$(mktemp -d)" ;;
  run) out="${OUT:-target/cuda-device}"; mkdir -p "$out" ;;
  *) echo "usage: ci/cuda-device.sh [--build | --dry-run]"; exit 2 ;;
esac
[ -x "$bin/finetp" ] || { echo "no $bin/finetp: run ci/cuda-device.sh --build where cargo is, and carry $bin"; exit 2; }

echo "== 1. the machine"
if [ "$mode" = run ]; then
  ldd --version | head -1
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  # NVRTC, cuBLASLt (nvidia/cu13/lib) and NCCL (nvidia/nccl/lib: libnccl.so.2, which finetp
  # loads by that name) from the Python CUDA wheels, where the toolkit does not have them.
  for py in python3 /opt/torch/.venv/bin/python3; do
    sp="$("$py" -c 'import site; print(site.getsitepackages()[0])' 2>/dev/null)" || continue
    for d in "$sp/nvidia/cu13/lib" "$sp/nvidia/nccl/lib" "$sp/nvidia/cublas/lib" "$sp/nvidia/cuda_nvrtc/lib"; do
      [ -d "$d" ] && LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
    done
  done
  export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:/usr/local/cuda/lib64"
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  export FINETP_REQUIRE_CUDA=1
else
  echo "(dry run: no GPU expected)"
fi
cfg="$out/smollm2"
smollm2_config "$cfg"
export FINETP_CUDA_SINGLE_DEVICE=1
step "2. conformance suite on the GPU" "$bin/conformance"
step "3. SmolLM2-shaped, DP 4, all four at size 2, one GPU, against the CPU" "$bin/smollm2_shaped"
step "4a. decode TPOT: graph vs eager, fine-grained vs replicated" "$bin/decode_tpot"
step "4b. finetp bench (sharded vs replicated per component, GEMM probes) and the h200 profile" \
  "$bin/finetp" bench --backend cuda --model "$cfg" -d 4 --additional-config "$layout" --calibrate "$out/h200.toml"
for batch in 1 16 64; do
  step "4c. finetp bench at $batch tokens per rank (decode-shape GEMMs against the fitted bandwidth)" \
    "$bin/finetp" bench --backend cuda --model "$cfg" -d 4 --additional-config "$layout" --batch-size "$batch" --repeats 10
done
step "plan" "$bin/finetp" plan --model "$cfg" -d 4 --additional-config "$layout" --dtype bf16
echo "== ci/cuda-device.sh ($mode) took $(( $(date +%s) - start )) s; output in $out"
