#!/usr/bin/env bash
# The CUDA job, on a machine without a GPU:
#   - a binary without the feature names the command that builds one with it, and that
#     command (`--features cuda`: cudarc, loaded at run time) works;
#   - every NVRTC kernel compiled to PTX by the real NVRTC (PyPI nvidia-cuda-nvrtc 13.0.88:
#     PTX ISA 9.0, what driver 580 / CUDA 13.0 loads) and assembled for sm_90a by ptxas
#     (PyPI nvidia-cuda-nvcc 13.0.88);
#   - `finetp run --backend cuda` with no driver, and with a stub driver that finds no GPU:
#     exit 1, one error line naming what is missing, no panic;
#   - the NCCL layer against a logging stub libnccl.so.2 (communicator order, grouped
#     send/recv of uneven collectives); the conformance suite and the SmolLM2-shaped check,
#     listed as ignored with the reason;
#   - ci/cuda-device.sh --dry-run (the script for a machine with a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
start=$(date +%s)
source ci/lib.sh

echo "== gcc (the stub libraries)"
apt_install gcc libc6-dev
export FINETP_REQUIRE_CUDA_STUBS=1 FINETP_REQUIRE_NVRTC=1 FINETP_REQUIRE_PTXAS=1

echo "== a binary without cuda names the command that builds one with it; that command works"
[ -x "$finetp" ] || cargo build --release --locked -p finetp-cli
expect_build_command run --backend cuda

echo "== NVRTC and ptxas from PyPI (pinned), unpacked once into the target directory"
tools="$target_dir/cuda-tools"
if [ ! -x "$tools/bin/ptxas" ] || [ ! -e "$tools/lib/libnvrtc.so.13" ]; then
  rm -rf "$tools" && mkdir -p "$tools/wheels"
  python3 -m pip download --quiet --no-deps --dest "$tools/wheels" nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-nvcc==13.0.88
  python3 - "$tools" <<'PY'
import sys, zipfile, pathlib, os
tools = pathlib.Path(sys.argv[1])
for whl in (tools / "wheels").glob("*.whl"):
    with zipfile.ZipFile(whl) as z:
        for name in z.namelist():
            p = pathlib.PurePosixPath(name)
            if name.startswith("nvidia/cu13/lib/libnvrtc") or name == "nvidia/cu13/bin/ptxas":
                dest = tools / ("bin" if "/bin/" in name else "lib") / p.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(z.read(name))
                os.chmod(dest, 0o755)
PY
  rm -rf "$tools/wheels"
fi
ls -la "$tools/lib" "$tools/bin"
"$tools/bin/ptxas" --version | tail -1

echo "== the backend's tests: NVRTC + ptxas, the logging-stub NCCL, conformance (ignored without a GPU)"
LD_LIBRARY_PATH="$tools/lib" FINETP_PTXAS="$tools/bin/ptxas" FINETP_PTX_OUT="$target_dir/cuda-ptx" \
  cargo test --locked -p finetp-backend-cuda 2>&1 | tee /tmp/cuda-tests.log | grep -E "NVRTC|ptxas|cuda|test result" || true
grep -q "nvrtc::every_kernel_compiles_for_sm_90a_and_ptxas_assembles_it ... ok" /tmp/cuda-tests.log || { echo "FAIL: the NVRTC/ptxas test did not pass"; exit 1; }
grep -q "cuda_stubs::nccl_groups_and_uneven_collectives_make_the_expected_calls ... ok" /tmp/cuda-tests.log || { echo "FAIL: the stub NCCL test did not pass"; exit 1; }
! grep -q "test result: FAILED" /tmp/cuda-tests.log || { echo "FAIL: a cuda test failed"; exit 1; }

echo "== finetp run --backend cuda without a GPU: exit 1, one line naming what is missing"
echo "-- no driver at all"
expect_one_error_line "cannot load libcuda.so.1" env LD_LIBRARY_PATH= "$finetp" run --backend cuda --max-tokens 4
stub="$target_dir/cuda-stub-driver"
mkdir -p "$stub"
gcc -shared -fPIC -O1 -Wall -Werror backends/cuda/tests/stubs/cuda.c -o "$stub/libcuda.so.1"
echo "-- a driver that finds no GPU (stub libcuda.so.1)"
expect_one_error_line "an NVIDIA GPU (the driver found none)" env LD_LIBRARY_PATH="$stub" "$finetp" run --backend cuda --max-tokens 4

echo "== ci/cuda-device.sh --dry-run"
bash ci/cuda-device.sh --dry-run
echo "== ci/cuda.sh took $(( $(date +%s) - start )) s"
