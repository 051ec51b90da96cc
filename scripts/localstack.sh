#!/usr/bin/env bash
# Run LocalStack (SQS and S3) on the host, without Docker, from a pinned PyPI install.
#   scripts/localstack.sh install   # venv in $STATE_DIR/localstack-venv (skipped if present)
#   scripts/localstack.sh start     # install if needed, launch in background, wait
#   scripts/localstack.sh wait      # wait (90 s max) until real SQS and S3 calls answer
#   scripts/localstack.sh stop      # stop the instance this script started
#   scripts/localstack.sh status    # print running/stopped; exit 0/1
# Listens on 127.0.0.1:$LOCALSTACK_PORT (default 4566). Log and pid: $STATE_DIR/localstack.log
# and .pid (localstack-PORT.log/.pid for other ports, so several can run side by side).
# The venv also gets AWS's Python SQS extended client (the tests' interop helper,
# tests/helpers/extended_client.py). S3 objects over 512 KiB live in the hard-coded
# /tmp/localstack-s3-storage/<bucket>/, shared by every instance: use distinct bucket names.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LS_SPEC='localstack-core[base-runtime]==4.13.1'
# The Python SQS extended client, for the end-to-end tests' interop helper (pure Python; its
# only dependency, boto3, is already pinned by the constraints).
XC_SPEC='amazon-sqs-extended-client==1.0.1'
LS_CONSTRAINTS="$REPO_ROOT/scripts/localstack-constraints.txt"
LS_MARKER="$LS_VENV/.sw-installed"
# Files are per port, so instances on other ports can run beside the default one.
sfx=""; [ "$LOCALSTACK_PORT" = 4566 ] || sfx="-$LOCALSTACK_PORT"
LS_DATA="$STATE_DIR/localstack$sfx"
LS_LOG="$STATE_DIR/localstack$sfx.log"
LS_PID="$STATE_DIR/localstack$sfx.pid"
LS_URL="http://127.0.0.1:$LOCALSTACK_PORT"
PY="$LS_VENV/bin/python"

# What the marker records: the specs plus a hash of the pins, so a change reinstalls.
wanted_marker() { printf '%s %s %s\n' "$LS_SPEC" "$XC_SPEC" "$(sha256sum <"$LS_CONSTRAINTS" | cut -d' ' -f1)"; }

make_venv() {
  rm -rf "$LS_VENV"
  mkdir -p "$STATE_DIR"
  command -v python3 >/dev/null || apt_install python3
  if ! python3 -m venv "$LS_VENV" >/dev/null 2>&1; then
    log "python3 -m venv failed; installing python3-venv"
    rm -rf "$LS_VENV"
    apt_install python3-venv
    python3 -m venv "$LS_VENV" || die "python3 -m venv still fails"
  fi
}

install() {
  if [ -f "$LS_MARKER" ] && [ "$(cat "$LS_MARKER")" = "$(wanted_marker)" ] &&
    "$PY" -c 'import localstack, boto3, sqs_extended_client' 2>/dev/null; then
    log "$LS_SPEC and $XC_SPEC already installed in $LS_VENV"
    return 0
  fi
  "$PY" -c 'import sys' 2>/dev/null || make_venv
  log "installing $LS_SPEC and $XC_SPEC into $LS_VENV (about 30 s)"
  "$PY" -m pip install -q --disable-pip-version-check -c "$LS_CONSTRAINTS" "$LS_SPEC" "$XC_SPEC" >&2
  wanted_marker >"$LS_MARKER"
  log "installed"
}

# Exit 0 if LocalStack health answers on our port, 2 if something else listens there, 1 if nothing.
health() {
  local py="$PY"
  [ -x "$py" ] || py=python3
  "$py" - "$LS_URL/_localstack/health" <<'PYEOF' 2>/dev/null
import json, sys, urllib.request, urllib.error
try:
    with urllib.request.urlopen(sys.argv[1], timeout=3) as r:
        sys.exit(0 if "services" in json.load(r) else 2)
except urllib.error.HTTPError:
    sys.exit(2)
except (urllib.error.URLError, OSError) as e:
    sys.exit(1 if isinstance(getattr(e, "reason", e), ConnectionRefusedError) else 2)
except ValueError:
    sys.exit(2)
PYEOF
}

# Pid from the pid file if that process is still our LocalStack on our port, else nothing.
our_pid() {
  local pid
  [ -f "$LS_PID" ] || return 1
  pid="$(cat "$LS_PID")"
  [ -n "$pid" ] && grep -qa 'localstack_main.py' "/proc/$pid/cmdline" 2>/dev/null &&
    grep -qzxF "GATEWAY_LISTEN=127.0.0.1:$LOCALSTACK_PORT" "/proc/$pid/environ" 2>/dev/null ||
    return 1
  echo "$pid"
}

wait_ready() {
  local pid=""
  [ -x "$PY" ] || die "LocalStack is not installed; run: $0 start"
  pid="$(our_pid)" || true
  log "waiting for SQS and S3 at $LS_URL (ListQueues, ListBuckets, up to 90 s)"
  if ! AWS_ENDPOINT_URL_SQS="$LS_URL" "$PY" "$REPO_ROOT/scripts/queues.py" wait --timeout 90 ${pid:+--pid "$pid"}; then
    if [ -f "$LS_LOG" ]; then log "last lines of $LS_LOG:"; tail -n 30 "$LS_LOG" >&2; fi
    die "LocalStack SQS did not answer at $LS_URL"
  fi
  # S3 loads with SQS (EAGER_SERVICE_LOADING), so this wait is short once SQS answers.
  if ! AWS_ENDPOINT_URL_S3="$LS_URL" "$PY" "$REPO_ROOT/scripts/buckets.py" wait --timeout 90 ${pid:+--pid "$pid"}; then
    if [ -f "$LS_LOG" ]; then log "last lines of $LS_LOG:"; tail -n 30 "$LS_LOG" >&2; fi
    die "LocalStack S3 did not answer at $LS_URL (SERVICES must include s3)"
  fi
  log "SQS and S3 ready at $LS_URL"
}

start() {
  install
  local rc=0
  health || rc=$?
  if [ "$rc" -eq 0 ]; then
    log "LocalStack already answers at $LS_URL; reusing it"
    wait_ready
    return 0
  fi
  [ "$rc" -eq 1 ] || die "port $LOCALSTACK_PORT is taken by something that does not answer as LocalStack"
  if our_pid >/dev/null; then
    log "LocalStack (pid $(our_pid)) is still starting"
  else
    mkdir -p "$LS_DATA"/{fs,config,cache}
    log "starting LocalStack on $LS_URL (log: $LS_LOG)"
    echo "--- scripts/localstack.sh start $(date -Is)" >>"$LS_LOG"
    # GATEWAY_SERVER=hypercorn: the default (twisted) server ignores the host part of
    # GATEWAY_LISTEN and binds 0.0.0.0; hypercorn binds 127.0.0.1 only.
    OVERRIDE_IN_DOCKER=0 GATEWAY_LISTEN="127.0.0.1:$LOCALSTACK_PORT" GATEWAY_SERVER=hypercorn \
      LOCALSTACK_HOST="127.0.0.1:$LOCALSTACK_PORT" SQS_ENDPOINT_STRATEGY=path \
      SERVICES=sqs,s3 EAGER_SERVICE_LOADING=1 DNS_ADDRESS=0 DISABLE_EVENTS=1 \
      SKIP_SSL_CERT_DOWNLOAD=1 FILESYSTEM_ROOT="$LS_DATA/fs" CONFIG_DIR="$LS_DATA/config" \
      XDG_CACHE_HOME="$LS_DATA/cache" LS_LOG=warn \
      setsid nohup "$PY" "$REPO_ROOT/scripts/localstack_main.py" </dev/null >>"$LS_LOG" 2>&1 &
    echo $! >"$LS_PID"
  fi
  wait_ready
}

stop() {
  local pid i
  if ! pid="$(our_pid)"; then
    rm -f "$LS_PID"
    log "not running (no live pid in $LS_PID)"
    return 0
  fi
  log "stopping LocalStack (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 20); do
    kill -0 "$pid" 2>/dev/null || break
    [ "$i" -eq 20 ] && { log "still alive after 10 s; SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; }
    sleep 0.5
  done
  rm -f "$LS_PID"
  log "stopped"
}

status() {
  local pid
  if pid="$(our_pid)"; then
    echo "running (pid $pid, $LS_URL, state $STATE_DIR)"
  elif health; then
    echo "running ($LS_URL answers, but was not started by this script)"
  else
    echo "stopped"
    return 1
  fi
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  wait) wait_ready ;;
  *) echo "usage: $0 install|start|stop|status|wait" >&2; exit 2 ;;
esac
