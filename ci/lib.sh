# Shared by the ci/*.sh jobs (sourced): Debian packages installed once, the release binary's
# path, the SmolLM2 layout every job runs, and the check that a binary built without a
# feature names the command that builds one with it.

# Installs the Debian packages given unless they are all installed already.
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    echo "already installed: $*"
    return
  fi
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# Debian's software Vulkan driver (Mesa lavapipe), so wgpu has an adapter; from then on a
# missing adapter is a failure (FINETP_REQUIRE_WGPU=1), not an ignored case.
use_lavapipe() {
  apt_install mesa-vulkan-drivers libvulkan1
  ls /usr/share/vulkan/icd.d/
  # Mesa's window-system layer warns on every device without it; compute does not need it.
  if [ -z "${XDG_RUNTIME_DIR:-}" ] || [ ! -d "${XDG_RUNTIME_DIR}" ]; then
    XDG_RUNTIME_DIR="$(mktemp -d)"
    chmod 700 "$XDG_RUNTIME_DIR"
    export XDG_RUNTIME_DIR
  fi
  export FINETP_REQUIRE_WGPU=1
}

target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
finetp="$target_dir/release/finetp"
layout='{"finegrained_tp_config":{"embedding_tensor_parallel_size":2,"lmhead_tensor_parallel_size":2,"oproj_tensor_parallel_size":2,"mlp_tensor_parallel_size":2}}'

# `run_printed_build_command CODE MSG`: MSG (what a binary without a feature printed, with
# exit code CODE) must be a non-zero exit naming "build one that has it with `<cmd>`"; runs
# <cmd> as printed.
run_printed_build_command() {
  local code="$1" msg="$2" cmd
  [ "$code" -ne 0 ] || { echo "expected a non-zero exit, got $code"; exit 1; }
  cmd="$(printf '%s\n' "$msg" | sed -n 's/.*build one that has it with `\([^`]*\)`.*/\1/p' | head -1)"
  [ -n "$cmd" ] || { echo "no build command in the message"; exit 1; }
  echo "running: $cmd"
  eval "$cmd"
}

# `expect_build_command ARGS...`: `finetp ARGS` on a binary built without the feature ARGS need
# exits 2 naming the command that builds one with it; runs that command as printed.
expect_build_command() {
  local msg code
  set +e
  msg="$("$finetp" "$@" 2>&1 >/dev/null)"
  code=$?
  set -e
  echo "$msg"
  [ "$code" -eq 2 ] || { echo "expected exit code 2, got $code"; exit 1; }
  run_printed_build_command "$code" "$msg"
}

# `expect_one_error_line NEEDLE CMD...`: CMD exits 1 with exactly one `error:` line on stderr
# (the run's plan header may precede it), that line names NEEDLE, and nothing panicked.
expect_one_error_line() {
  local needle="$1" err code errors
  shift
  set +e
  err="$("$@" 2>&1 >/dev/null)"
  code=$?
  set -e
  errors="$(printf '%s\n' "$err" | grep '^error:' || true)"
  echo "$errors"
  [ "$code" -eq 1 ] || { echo "FAIL: exit code $code"; printf '%s\n' "$err" | tail -5; exit 1; }
  [ "$(printf '%s\n' "$errors" | grep -c .)" -eq 1 ] || { echo "FAIL: expected one error line"; exit 1; }
  grep -q "$needle" <<<"$errors" || { echo "FAIL: the error line does not say '$needle'"; exit 1; }
  ! grep -q "panicked" <<<"$err" || { echo "FAIL: a panic"; exit 1; }
}
