#!/usr/bin/env bash
# `docker compose up` of docker/compose.yaml, for real: the whole system in containers
# (LocalStack, PostgreSQL, migrate, worker, ingest on compose's own network), one webhook in,
# its row out, then `down -v`.
#   scripts/compose-check.sh
# Uses `docker compose` where the v2 plugin exists, else Debian's `docker-compose` 1.29
# (installed with apt if missing); COMPOSE_CMD="path/to/compose" picks another (a v2 binary).
# Starts a Docker engine when none answers (as scripts/container-check.sh does). Images: the
# public ones where they can be pulled; where not, LocalStack and PostgreSQL are built from
# Debian's packages and PyPI (scripts/container-images.sh), the runtime base from Debian's
# (scripts/container-base.sh), and the binaries are built on this host and copied in
# (BINARIES=prebuilt; profile SW_BUILD_PROFILE, default dist; PREBUILT_DIR=dir takes ingest and
# worker from there instead of cargo).
# Runs as project compose-check-PID on host ports COMPOSE_CHECK_PORT_BASE (20000) + 4566,
# 5432, 8080, 9091, 9092, never the defaults a host LocalStack or PostgreSQL may hold.
# Checks: ingest and worker healthy (read-only root, all capabilities dropped); POST answers
# 202; the row is in webhook_events; LocalStack and PostgreSQL answer on their published ports.
# Prints how long each step took. Fails, never skips, when something cannot run; always
# takes the project down (containers, network, volume) on exit.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$(dirname "${BASH_SOURCE[0]}")/docker-lib.sh"

PROJECT="compose-check-$$"
COMPOSE_FILE="$REPO_ROOT/docker/compose.yaml"
base="${COMPOSE_CHECK_PORT_BASE:-20000}"
# compose.yaml's port variables (lib.sh's LOCALSTACK_PORT, the host LocalStack's, is replaced).
export LOCALSTACK_PORT=$((base + 4566)) POSTGRES_PORT=$((base + 5432)) INGEST_PORT=$((base + 8080)) \
  INGEST_METRICS_PORT=$((base + 9091)) WORKER_METRICS_PORT=$((base + 9092))
export APP_IMAGE="${APP_IMAGE:-scalable-webhook:compose-check}"
WAIT_SECONDS="${WAIT_SECONDS:-180}"
work="$(mktemp -d)"
compose=()
up=0
timings=()

cleanup() {
  local rc=$?
  if [ "$up" = 1 ]; then
    [ "$rc" = 0 ] || { log "compose ps and logs (last lines):"; c ps >&2 || true; c logs --tail 25 >&2 || true; }
    log "down -v"
    c down -v --remove-orphans >/dev/null 2>&1 || log "WARNING: '${compose[*]} -p $PROJECT down -v' failed; remove what is left by hand"
  fi
  rm -rf "$work"
  remove_replaced
  [ "${#timings[@]}" = 0 ] || { log "timings:"; printf '  %s\n' "${timings[@]}" >&2; }
  exit "$rc"
}
trap cleanup EXIT

c() { "${compose[@]}" -p "$PROJECT" -f "$COMPOSE_FILE" "$@"; }

# step NAME COMMAND...: runs it, records and prints how long it took.
step() {
  local name="$1" started="$EPOCHREALTIME" took
  shift
  log "== $name"
  "$@"
  took="$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f s", b - a }')"
  timings+=("$(printf '%-34s %s' "$name" "$took")")
  log "   $name: $took"
}

choose_compose() {
  if [ -n "${COMPOSE_CMD:-}" ]; then
    read -r -a compose <<<"$COMPOSE_CMD"
  elif docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
  else
    command -v docker-compose >/dev/null || apt_install docker-compose
    compose=(docker-compose)
  fi
  local version
  version="$("${compose[@]}" version --short 2>/dev/null)" || die "'${compose[*]} version' fails"
  log "compose: ${compose[*]} ($version)"
  case "$version" in
    1.*)
      # v1 builds with BuildKit only through the docker client (COMPOSE_DOCKER_CLI_BUILD),
      # and only with one that can: where the client on PATH lacks buildx, Debian's own is
      # put first on compose's PATH (v1 calls the client for builds only).
      export COMPOSE_DOCKER_CLI_BUILD=1 DOCKER_BUILDKIT=1
      if [ "$(build_client)" != docker ]; then
        mkdir -p "$work/bin"
        ln -s "$(build_client)" "$work/bin/docker"
        compose=(env "PATH=$work/bin:$PATH" "${compose[@]}")
      fi
      ;;
  esac
}

free_port() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null || die "host port $1 is taken; set COMPOSE_CHECK_PORT_BASE to use others"
}

# Where the public LocalStack and PostgreSQL images cannot be had, the local ones.
choose_service_images() {
  local built=()
  if [ -n "${LOCALSTACK_IMAGE:-}" ]; then
    image_here "$LOCALSTACK_IMAGE" || die "LOCALSTACK_IMAGE=$LOCALSTACK_IMAGE is neither here nor pullable"
  elif ! image_here localstack/localstack:4.13.1; then
    export LOCALSTACK_IMAGE=scalable-webhook/localstack:4.13.1
    built+=(localstack)
  fi
  if [ -n "${POSTGRES_IMAGE:-}" ]; then
    image_here "$POSTGRES_IMAGE" || die "POSTGRES_IMAGE=$POSTGRES_IMAGE is neither here nor pullable"
  elif ! image_here postgres:17; then
    export POSTGRES_IMAGE=scalable-webhook/postgres:15-bookworm
    built+=(postgres)
  fi
  for which in "${built[@]}"; do
    log "the public $which image cannot be pulled here: building it from package registries"
    "$REPO_ROOT/scripts/container-images.sh" "$which"
  done
  log "LocalStack: ${LOCALSTACK_IMAGE:-localstack/localstack:4.13.1}; PostgreSQL: ${POSTGRES_IMAGE:-postgres:17}"
}

# The app's build arguments: public bases where they can be had, else the local runtime base
# and binaries built on this host.
choose_app_build() {
  ensure_runtime_base
  export RUNTIME_BASE
  if image_here "${BUILDER_BASE:-rust:1.95.0-bookworm}"; then
    export BINARIES=builder
  else
    export BINARIES=prebuilt
    prebuild_binaries
  fi
  log "app: RUNTIME_BASE=$RUNTIME_BASE BINARIES=$BINARIES -> $APP_IMAGE"
}

# migrate, worker and ingest share one build (x-app) and its image: built once, through
# migrate. BuildKit's progress goes to a file, shown only when the build fails. The image it
# replaces is removed at exit if nothing else uses it (each build is a new image id, if only
# for its date).
compose_build() {
  local old new
  old="$(docker image inspect --format '{{.Id}}' "$APP_IMAGE" 2>/dev/null || true)"
  c build migrate >"$work/build.log" 2>&1 || { tail -n 40 "$work/build.log" >&2; die "compose build failed"; }
  new="$(docker image inspect --format '{{.Id}}' "$APP_IMAGE")"
  [ -z "$old" ] || [ "$old" = "$new" ] || REPLACED_IMAGES+=("$old")
}

compose_up() {
  for port in "$LOCALSTACK_PORT" "$POSTGRES_PORT" "$INGEST_PORT" "$INGEST_METRICS_PORT" "$WORKER_METRICS_PORT"; do
    free_port "$port"
  done
  up=1
  # Returns once localstack and postgres are healthy and migrate has exited 0 (depends_on).
  c up -d --no-build >&2
}

wait_healthy() {
  local service id status="" deadline=$((SECONDS + WAIT_SECONDS))
  for service in "$@"; do
    id="$(c ps -q "$service")"
    [ -n "$id" ] || die "no container for $service"
    while [ "$SECONDS" -lt "$deadline" ]; do
      status="$(docker inspect --format '{{.State.Health.Status}}' "$id")"
      [ "$status" = healthy ] && break
      [ "$status" != unhealthy ] || die "$service is unhealthy"
      sleep 1
    done
    [ "$status" = healthy ] || die "$service is '$status', not healthy, after $WAIT_SECONDS s"
    [ "$(docker inspect --format '{{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}}' "$id")" = "true [ALL]" ] \
      || die "$service does not run read-only with all capabilities dropped"
    log "$service: healthy (read-only, cap_drop ALL)"
  done
}

webhook_round_trip() {
  local answer status id rows=""
  answer="$(curl -sS -w '\n%{http_code}' -X POST "http://127.0.0.1:$INGEST_PORT/webhooks/demo" \
    -H 'content-type: application/json' -d '{"hello":"compose"}')" || die "POST to ingest on 127.0.0.1:$INGEST_PORT failed"
  status="${answer##*$'\n'}"
  [ "$status" = 202 ] || die "POST answered $status, not 202: ${answer%$'\n'*}"
  id="$(sed -n 's/.*"id":"\([^"]*\)".*/\1/p' <<<"${answer%$'\n'*}")"
  [ -n "$id" ] || die "the 202 carries no id: ${answer%$'\n'*}"
  log "POST /webhooks/demo: 202, id $id"
  for _ in $(seq 1 60); do
    rows="$(c exec -T postgres psql -X -q -tA -U postgres -d scalable_webhook \
      -c "SELECT count(*) FROM webhook_events WHERE source = 'demo' AND id = '$id' AND payload->>'hello' = 'compose'" 2>/dev/null || true)"
    [ "$rows" = 1 ] && break
    sleep 0.5
  done
  [ "$rows" = 1 ] || die "the row of webhook $id did not appear in webhook_events within 30 s"
  log "its row is in webhook_events"
}

published_ports() {
  curl -fsS "http://127.0.0.1:$LOCALSTACK_PORT/_localstack/init/ready" | grep -q SUCCESSFUL \
    || die "LocalStack does not answer on its published port $LOCALSTACK_PORT"
  if command -v pg_isready >/dev/null; then
    pg_isready -q -h 127.0.0.1 -p "$POSTGRES_PORT" || die "PostgreSQL does not answer on its published port $POSTGRES_PORT"
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$POSTGRES_PORT") 2>/dev/null || die "nothing listens on PostgreSQL's published port $POSTGRES_PORT"
  fi
  log "LocalStack (127.0.0.1:$LOCALSTACK_PORT) and PostgreSQL (127.0.0.1:$POSTGRES_PORT) answer on the host"
}

step "engine" ensure_engine
step "compose" choose_compose
step "service images" choose_service_images
step "app build arguments" choose_app_build
step "compose build (app image)" compose_build
step "compose up (to migrate done)" compose_up
step "ingest and worker healthy" wait_healthy ingest worker
step "one webhook in, its row out" webhook_round_trip
step "published ports" published_ports
for service in localstack postgres ingest; do
  image="$(docker inspect --format '{{.Config.Image}}' "$(c ps -q "$service")")"
  log "image of $service: $image, $(image_size "$image")"
done
step "compose down -v" c down -v --remove-orphans
up=0
log "PASSED"
