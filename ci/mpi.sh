#!/usr/bin/env bash
# The MPI job: Debian's Open MPI; the command a binary without MPI prints under mpirun, run as
# printed; then ranks as processes on SmolLM2 (DP 4, all four components at size 2): 4
# processes, 2 processes x 2 ranks, and 4 processes over TCP only (`--mca btl tcp,self`, the
# multi-node transport) must give the threaded run's tokens, and a rank killed or stopped
# mid-generation must end the job with finetp's own error naming it. mpirun runs with
# --oversubscribe (4 processes on 2 cores) and as root (CI runs as root).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
start=$(date +%s)

source ci/lib.sh

echo "== Open MPI (openmpi-bin, libopenmpi-dev: mpirun and mpicc)"
apt_install openmpi-bin libopenmpi-dev
mpirun --version | head -1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# From here on a missing MPI (or model) is a failure, not an ignored case.
export FINETP_REQUIRE_MPI=1 FINETP_REQUIRE_MODEL=1

echo "== a binary without MPI, under mpirun, names the command that builds one with it; that command works"
cargo build --release --locked -p finetp-cli
set +e
msg="$(mpirun --oversubscribe --timeout 120 -np 2 "$finetp" run -d 2 --additional-config "$layout" 2>&1 >/dev/null)"
code=$?
set -e
echo "$msg" | grep '^error' | sort -u
run_printed_build_command "$code" "$msg"

echo "== ranks as processes: same tokens as threads (4 processes, 2 x 2, TCP only); killed and stopped ranks"
# One case at a time: each starts 4 processes on 2 cores, and the fault cases time their ends.
cargo test --release --locked -p finetp-cli --features mpi --test mpi -- --test-threads 1

echo "== mpirun -np 4 finetp run (DP 4, all components at size 2), with the binary the printed command built"
mpirun --oversubscribe --timeout 300 -np 4 "$finetp" run --data-parallel-size 4 --additional-config "$layout" --max-tokens 32

echo "== finetp bench under mpirun (its collectives then time the MPI transport): 2 x 2 ranks, then 4 x 1"
for np in 2 4; do
  mpirun --oversubscribe --timeout 300 -np "$np" "$finetp" bench --data-parallel-size 4 \
    --additional-config '{"finegrained_tp_config":{"mlp_tensor_parallel_size":2}}' --warmup 1 --repeats 3 > /dev/null
done

echo "== ci/mpi.sh took $(( $(date +%s) - start )) s"
