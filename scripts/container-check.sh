#!/usr/bin/env bash
# The container path, for real: builds the image and runs ingest and worker in Docker against
# LocalStack and PostgreSQL on the host, as users try it.
#   scripts/container-check.sh
# Starts a Docker engine when none answers (Debian's docker.io; as root, no iptables, no
# bridge: containers on the host network, data under .local/dockerd). Where no image can be
# pulled, the runtime base comes from scripts/container-base.sh and the binaries are built on
# this (Debian 12) host and copied in (BINARIES=prebuilt, see docker/Dockerfile).
# Checks: the image runs as uid 65532, with a read-only root file system and no shell; its
# size is printed; `worker migrate`, worker and ingest containers come up and report healthy;
# one webhook in, its row out; `docker stop` of the worker under a backlog exits 0 within the
# grace and nothing is lost. Fails, never skips, when the engine cannot start.
# `docker compose up` (docker/compose.yaml) is checked by scripts/compose-check.sh.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$(dirname "${BASH_SOURCE[0]}")/docker-lib.sh"

IMAGE="scalable-webhook:check"
INGEST_PORT="${INGEST_PORT:-18280}"
INGEST_METRICS="${INGEST_METRICS:-127.0.0.1:19280}"
WORKER_METRICS="${WORKER_METRICS:-127.0.0.1:19281}"
GRACE=10
PREFIX="container-check-$$"
DATABASE="container_check_$$"
containers=()
BUILT_WITH="binaries built in the builder stage"

cleanup() {
  for c in "${containers[@]}"; do docker rm -f "$c" >/dev/null 2>&1 || true; done
  psql -X -q -h 127.0.0.1 -U postgres -d postgres \
    -c "DROP DATABASE IF EXISTS $DATABASE WITH (FORCE)" >/dev/null 2>&1 || true
  stop_local_stack
}
trap cleanup EXIT

build_image() {
  local args=()
  ensure_runtime_base
  args+=(--build-arg "RUNTIME_BASE=$RUNTIME_BASE")
  if ! image_here rust:1.95.0-bookworm; then
    prebuild_binaries
    args+=(--build-arg BINARIES=prebuilt)
    BUILT_WITH="binaries from $PREBUILT_FROM"
  fi
  log "$(build_client) build ${args[*]}"
  docker_build --quiet -f "$REPO_ROOT/docker/Dockerfile" "${args[@]}" -t "$IMAGE" "$REPO_ROOT" >/dev/null
}

check_image() {
  local user shell
  user="$(docker image inspect --format '{{.Config.User}}' "$IMAGE")"
  [ "${user%%:*}" = 65532 ] || die "the image runs as '$user', not 65532"
  shell="$(docker run --rm --read-only --entrypoint /bin/sh "$IMAGE" -c true 2>&1 || true)"
  case "$shell" in *"no such file or directory"*) ;; *) die "the image has a shell: $shell" ;; esac
  docker run --rm --read-only "$IMAGE" ingest --version >/dev/null || die "ingest does not run read-only"
  log "image $IMAGE ($BUILT_WITH): uid 65532, read-only root, no shell; size $(image_size "$IMAGE") (goal for the dist build: under 40 MB)"
}

# Runs `COMMAND` (ingest or worker) in a container of the image as the README's "Run it,
# test it" does (host network, read-only, no capabilities; LocalStack's settings and the
# queue), with the extra docker arguments given: run_container NAME COMMAND [ARGS...]
run_container() {
  local name="$1" command="$2"; shift 2
  containers+=("$name")
  docker run -d --name "$name" --network host --read-only --cap-drop ALL \
    --security-opt no-new-privileges:true \
    -e AWS_ENDPOINT_URL="$LS_URL" -e AWS_REGION=us-east-1 -e AWS_ACCESS_KEY_ID=test \
    -e AWS_SECRET_ACCESS_KEY=test -e QUEUE_URL="$QUEUE_URL" "$@" "$IMAGE" "$command" >/dev/null
}

wait_healthy() {
  local name="$1" status=""
  for _ in $(seq 1 60); do
    status="$(docker inspect --format '{{.State.Health.Status}}' "$name" 2>/dev/null || true)"
    [ "$status" = healthy ] && { log "$name: healthy"; return; }
    sleep 1
  done
  docker logs "$name" 2>&1 | tail -n 20 >&2
  die "$name is '$status', not healthy, after 60 s"
}

rows() {
  psql -X -q -tA -h 127.0.0.1 -U postgres -d "$DATABASE" -c "SELECT count(*) FROM webhook_events $1"
}

ensure_engine
build_image
check_image

"$REPO_ROOT/scripts/postgres.sh" ensure >/dev/null
start_local_stack
LS_URL="http://127.0.0.1:$LOCALSTACK_PORT"
eval "$("$REPO_ROOT/scripts/queues.sh" create "$PREFIX")"
psql -X -q -h 127.0.0.1 -U postgres -d postgres -c "CREATE DATABASE $DATABASE" >/dev/null
DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DATABASE"

log "worker migrate, then worker and ingest containers"
containers+=("$PREFIX-migrate")
docker run --name "$PREFIX-migrate" --network host --read-only --cap-drop ALL \
  --security-opt no-new-privileges:true -e DATABASE_URL="$DATABASE_URL" "$IMAGE" worker migrate >/dev/null
# Held to 50 writes a second, so that the backlog below is still there when it is stopped.
run_container "$PREFIX-worker" worker -e DATABASE_URL="$DATABASE_URL" -e METRICS_ADDR="$WORKER_METRICS" \
  -e SHUTDOWN_GRACE_SECONDS="$GRACE" -e MAX_MESSAGES_PER_SECOND=50
run_container "$PREFIX-ingest" ingest -e LISTEN_ADDR="127.0.0.1:$INGEST_PORT" -e METRICS_ADDR="$INGEST_METRICS"
wait_healthy "$PREFIX-worker"
wait_healthy "$PREFIX-ingest"

status="$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$INGEST_PORT/webhooks/container-check" \
  -H 'content-type: application/json' -H 'x-request-id: one' -d '{"hello":"container"}')"
[ "$status" = 202 ] || die "POST answered $status, not 202"
for _ in $(seq 1 60); do
  [ "$(rows "WHERE source = 'container-check'")" = 1 ] && break
  sleep 0.5
done
[ "$(rows "WHERE source = 'container-check'")" = 1 ] || die "the webhook's row did not appear"
log "one webhook in (202), its row out"

log "a backlog, then docker stop of the worker (grace $GRACE s)"
sent=1
for i in $(seq 1 400); do
  code="$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$INGEST_PORT/webhooks/backlog" \
    -H 'content-type: application/json' -d "{\"n\":$i}")"
  [ "$code" = 202 ] && sent=$((sent + 1))
done
started=$(date +%s)
docker stop -t $((GRACE + 20)) "$PREFIX-worker" >/dev/null
took=$(( $(date +%s) - started ))
code="$(docker inspect --format '{{.State.ExitCode}}' "$PREFIX-worker")"
[ "$code" = 0 ] || die "the worker exited $code after docker stop"
[ "$took" -le "$GRACE" ] || die "the worker took $took s to stop, past its grace of $GRACE s"
at_stop="$(rows "")"
[ "$at_stop" -lt "$sent" ] || die "the backlog was drained before the stop ($at_stop of $sent): nothing was tested"
log "worker stopped in $took s, exit 0, with $((sent - at_stop)) of $sent accepted webhooks not yet stored"
run_container "$PREFIX-worker-2" worker -e DATABASE_URL="$DATABASE_URL" -e METRICS_ADDR="$WORKER_METRICS"
for _ in $(seq 1 120); do
  [ "$(rows "")" -ge "$sent" ] && break
  sleep 0.5
done
stored="$(rows "")"
[ "$stored" = "$sent" ] || die "$sent accepted, $stored stored"
started=$(date +%s)
docker stop -t 30 "$PREFIX-ingest" >/dev/null
took=$(( $(date +%s) - started ))
code="$(docker inspect --format '{{.State.ExitCode}}' "$PREFIX-ingest")"
[ "$code" = 0 ] || die "ingest exited $code after docker stop"
log "ingest stopped in $took s, exit 0"
log "PASSED: $sent accepted, $sent stored, none lost or duplicated"
