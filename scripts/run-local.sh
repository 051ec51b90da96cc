#!/usr/bin/env bash
# Runs the whole system locally on a fresh Debian machine with Rust: PostgreSQL, LocalStack
# SQS with the queue and its DLQ and S3 with the large-payload bucket (LARGE_PAYLOAD_BUCKET of
# both binaries), the migrations, then ingest and worker in the foreground.
# Prints a curl line to try; Ctrl-C stops everything this script started.
#   scripts/run-local.sh           # run until Ctrl-C
#   scripts/run-local.sh --check   # start, send a small and a 2 MiB webhook, wait for their rows, stop (CI)
# Ports: INGEST_PORT (8080), INGEST_METRICS_PORT (9090), WORKER_METRICS_PORT (9091).
# Names: SW_QUEUE_NAME (webhooks), SW_BUCKET_NAME (scalable-webhook-payloads), SW_DATABASE.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

check=0
[ "${1:-}" = "--check" ] && check=1
: "${INGEST_PORT:=8080}" "${INGEST_METRICS_PORT:=9090}" "${WORKER_METRICS_PORT:=9091}"
: "${SW_QUEUE_NAME:=webhooks}" "${SW_DATABASE:=scalable_webhook}"
: "${SW_BUCKET_NAME:=scalable-webhook-payloads}"
command -v cargo >/dev/null || die "cargo not found: install Rust first (https://rustup.rs)"
command -v cc >/dev/null || apt_install gcc libc6-dev

start_local_stack

pids=()
# shellcheck disable=SC2317  # called through trap
cleanup() {
  trap - EXIT INT TERM
  if [ "${#pids[@]}" -gt 0 ]; then
    log "stopping ingest and worker"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  stop_local_stack
}
trap cleanup EXIT INT TERM

psql_admin() { psql -X -q -tA -h 127.0.0.1 -U postgres -d postgres "$@"; }
if [ -z "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$SW_DATABASE'")" ]; then
  psql_admin -c "CREATE DATABASE \"$SW_DATABASE\"" >/dev/null
fi
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$SW_DATABASE"
eval "$("$REPO_ROOT/scripts/queues.sh" create "$SW_QUEUE_NAME")"
export QUEUE_URL DLQ_URL
# Webhooks too large for SQS go to this bucket; the queue carries a pointer to them.
eval "$("$LS_VENV/bin/python" "$REPO_ROOT/scripts/buckets.py" create "$SW_BUCKET_NAME")"
export LARGE_PAYLOAD_BUCKET="$BUCKET"

cd "$REPO_ROOT"
log "building ingest and worker"
cargo build --quiet -p ingest -p worker --bins  # same selection as the tests: shared artifacts
target/debug/worker migrate

METRICS_ADDR="127.0.0.1:$WORKER_METRICS_PORT" target/debug/worker run &
pids+=($!)
LISTEN_ADDR="127.0.0.1:$INGEST_PORT" METRICS_ADDR="127.0.0.1:$INGEST_METRICS_PORT" target/debug/ingest &
pids+=($!)

url="http://127.0.0.1:$INGEST_PORT"
for _ in $(seq 1 100); do
  python3 -c "import urllib.request as u; u.urlopen('$url/healthz', timeout=1)" 2>/dev/null && break
  sleep 0.2
done

cat >&2 <<TXT

scalable-webhook is running:
  ingest   $url  (metrics http://127.0.0.1:$INGEST_METRICS_PORT/metrics)
  worker   metrics http://127.0.0.1:$WORKER_METRICS_PORT/metrics
  queue    $QUEUE_URL
  dlq      $DLQ_URL
  bucket   $LARGE_PAYLOAD_BUCKET (webhooks too large for SQS)
  database $DATABASE_URL

Try it:
  curl -i -X POST $url/webhooks/demo -H 'content-type: application/json' -d '{"hello":"world"}'
  psql $DATABASE_URL -c 'SELECT source, id, stored_at, payload FROM webhook_events ORDER BY stored_at DESC LIMIT 5'

Ctrl-C stops everything.
TXT

if [ "$check" -eq 1 ]; then
  id="$(python3 - "$url" <<'PY'
import json, sys, urllib.request
req = urllib.request.Request(sys.argv[1] + "/webhooks/demo", data=b'{"hello":"world"}',
                             headers={"content-type": "application/json"}, method="POST")
with urllib.request.urlopen(req, timeout=10) as r:
    assert r.status == 202, r.status
    print(json.load(r)["id"])
PY
)"
  log "accepted webhook $id; waiting for its row"
  stored=0
  for _ in $(seq 1 100); do
    row="$(psql -X -q -tA "$DATABASE_URL" -c "SELECT payload->>'hello' FROM webhook_events WHERE id = '$id'")"
    if [ "$row" = "world" ]; then stored=1; break; fi
    sleep 0.2
  done
  [ "$stored" -eq 1 ] || die "webhook $id was accepted but never stored"
  log "webhook $id is in webhook_events"
  # A 2 MiB webhook: too large for SQS, so it goes through the bucket.
  id="$(python3 - "$url" <<'PY'
import json, sys, urllib.request
body = json.dumps({"hello": "large", "pad": "x" * (2 * 1024 * 1024)}).encode()
req = urllib.request.Request(sys.argv[1] + "/webhooks/demo", data=body,
                             headers={"content-type": "application/json"}, method="POST")
with urllib.request.urlopen(req, timeout=60) as r:
    assert r.status == 202, r.status
    print(json.load(r)["id"])
PY
)"
  log "accepted a 2 MiB webhook $id (through $LARGE_PAYLOAD_BUCKET); waiting for its row"
  for _ in $(seq 1 150); do
    row="$(psql -X -q -tA "$DATABASE_URL" -c "SELECT payload->>'hello' FROM webhook_events WHERE id = '$id'")"
    if [ "$row" = "large" ]; then log "check passed: both webhooks are in webhook_events"; exit 0; fi
    sleep 0.2
  done
  die "the 2 MiB webhook $id was accepted but never stored"
fi
wait -n "${pids[@]}"
die "a service exited; see its output above"
