# shellcheck shell=bash
# Shared helpers for the local-stack scripts. Source it, don't run it:
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# Provides REPO_ROOT, STATE_DIR (override with SW_STATE_DIR), LS_VENV, SUDO,
# log/die/apt_install, and exported defaults for the AWS/LocalStack environment.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE_DIR="${SW_STATE_DIR:-$REPO_ROOT/.local}"
case "$STATE_DIR" in /*) ;; *) STATE_DIR="$PWD/$STATE_DIR" ;; esac
# shellcheck disable=SC2034  # used by the scripts that source this file
LS_VENV="$STATE_DIR/localstack-venv"

log() { printf '[%s] %s\n' "$(basename "$0" .sh)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Empty when already root; otherwise commands needing root are run through sudo.
if [ "$EUID" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi

_APT_UPDATED=""
apt_install() {
  if [ -n "$SUDO" ] && ! command -v sudo >/dev/null; then
    die "need root or sudo to install: $*"
  fi
  if [ -z "$_APT_UPDATED" ]; then
    log "apt-get update"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    _APT_UPDATED=1
  fi
  log "apt-get install $*"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

: "${LOCALSTACK_PORT:=4566}"
: "${AWS_ENDPOINT_URL:=http://127.0.0.1:$LOCALSTACK_PORT}"
: "${AWS_REGION:=us-east-1}"
: "${AWS_DEFAULT_REGION:=$AWS_REGION}"  # boto3 / aws CLI read this one, not AWS_REGION
: "${AWS_ACCESS_KEY_ID:=test}"
: "${AWS_SECRET_ACCESS_KEY:=test}"
: "${AWS_EC2_METADATA_DISABLED:=true}"
export LOCALSTACK_PORT AWS_ENDPOINT_URL AWS_REGION AWS_DEFAULT_REGION AWS_ACCESS_KEY_ID \
  AWS_SECRET_ACCESS_KEY AWS_EC2_METADATA_DISABLED

# The local stack the tests, benchmarks and run command need: PostgreSQL (installed and
# started if missing) and LocalStack on the host. stop_local_stack stops LocalStack only if
# start_local_stack started it; set `trap stop_local_stack EXIT` before calling it.
_STARTED_LOCALSTACK=0
start_local_stack() {
  "$REPO_ROOT/scripts/postgres.sh" ensure
  "$REPO_ROOT/scripts/localstack.sh" status >/dev/null 2>&1 || _STARTED_LOCALSTACK=1
  "$REPO_ROOT/scripts/localstack.sh" start
}
stop_local_stack() {
  if [ "$_STARTED_LOCALSTACK" -eq 1 ]; then "$REPO_ROOT/scripts/localstack.sh" stop; fi
}

# Runs the e2e-tests binary $1 with the remaining arguments, in release mode unless
# SW_BUILD_PROFILE=dev (which reuses the debug binaries a test run has just built; CI does this).
run_e2e_bin() {
  local bin="$1"
  shift
  if [ "${SW_BUILD_PROFILE:-release}" = dev ]; then
    cargo run -q -p e2e-tests --bin "$bin" -- "$@"
  else
    cargo run --release -q -p e2e-tests --bin "$bin" -- "$@"
  fi
}
