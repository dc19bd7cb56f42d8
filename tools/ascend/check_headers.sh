#!/usr/bin/env bash
# Opt-in (not run by CI): checks finetp's own ACL and HCCL declarations
# (bindings/{ascend,hccl}-sys/include/) against the vendor's real headers — function
# signatures, enum values, struct fields — by running bindgen over both and comparing what it
# generates (tools/ascend/compare_bindings.py). The vendor's headers are licensed for use on
# systems with Huawei AI processors only (CANN Open Software License v2.0): run this there, and
# never commit the headers or anything generated from them.
#
#   tools/ascend/check_headers.sh                      # CANN installed: $ASCEND_TOOLKIT_HOME/include
#   tools/ascend/check_headers.sh --torch-npu          # the ACL/HCCL headers in the torch-npu wheel (pip)
#   tools/ascend/check_headers.sh DIR[:DIR...]         # include directories holding acl/acl.h and hccl/hccl.h
#
# aclnn has no headers in any registry we can reach; finetp_aclnn.h is checked only by running
# on an Ascend machine (docs/backends.md). Needs libclang (apt install libclang-dev).
set -euo pipefail
cd "$(dirname "$0")/../.."
work="${TMPDIR:-/tmp}/finetp-header-check"
mkdir -p "$work"
if [ "${1:-}" = "--torch-npu" ]; then
  python3 -m pip download --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 \
    --python-version 3.11 -d "$work" "torch-npu==${TORCH_NPU_VERSION:-2.14.0}" -q
  python3 - "$work" <<'PY'
import glob, sys, zipfile
work = sys.argv[1]
wheel = sorted(glob.glob(f"{work}/torch_npu-*.whl"))[-1]
with zipfile.ZipFile(wheel) as z:
    for n in z.namelist():
        if n.startswith("torch_npu/include/") and n.endswith(".h"):
            z.extract(n, f"{work}/wheel")
PY
  t="$work/wheel/torch_npu/include"
  include="$t/third_party/acl/inc:$t/third_party/hccl/inc:$t"
elif [ -n "${1:-}" ]; then
  include="$1"
else
  home="${ASCEND_TOOLKIT_HOME:-${ASCEND_HOME_PATH:-}}"
  [ -n "$home" ] || { echo "no CANN: set ASCEND_TOOLKIT_HOME, pass --torch-npu, or name the include directories"; exit 2; }
  include="$home/include"
fi
echo "== bindgen over finetp's declarations"
env -u ASCEND_TOOLKIT_HOME -u ASCEND_HOME_PATH -u FINETP_ASCEND_INCLUDE FINETP_REQUIRE_BINDGEN=1 \
  CARGO_TARGET_DIR="$work/ours" cargo build -q --locked -p hccl-sys
echo "== bindgen over the vendor's headers in $include"
FINETP_ASCEND_INCLUDE="$include" FINETP_REQUIRE_BINDGEN=1 CARGO_TARGET_DIR="$work/theirs" cargo build -q --locked -p hccl-sys
status=0
for f in ascend-sys:ascend.rs hccl-sys:hccl.rs; do
  crate=${f%%:*}; file=${f##*:}
  ours="$(ls -t "$work"/ours/debug/build/"$crate"-*/out/"$file" | head -1)"
  theirs="$(ls -t "$work"/theirs/debug/build/"$crate"-*/out/"$file" | head -1)"
  python3 tools/ascend/compare_bindings.py "$ours" "$theirs" || status=1
done
[ "$status" -eq 0 ] && echo "== finetp's ACL and HCCL declarations agree with the vendor's headers" \
  || echo "== finetp's declarations differ from the vendor's (above): fix bindings/*/include/, then regenerate src/generated/"
exit "$status"
