# shellcheck shell=bash
# Docker helpers shared by the container scripts (container-check.sh, compose-check.sh,
# container-images.sh). Source it after lib.sh, don't run it:
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#   . "$(dirname "${BASH_SOURCE[0]}")/docker-lib.sh"
# Provides ensure_engine, image_here, build_client/docker_build (BuildKit where the client on
# PATH has no buildx), image_size, ensure_runtime_base, prebuild_binaries, debian_base and
# remove_replaced.

DOCKERD_DIR="$STATE_DIR/dockerd"

# A Docker engine that answers: the one at DOCKER_HOST (or the default socket), else one
# started here (Debian's docker.io; as root, no iptables, no default bridge: data under
# .local/dockerd). User-defined networks (compose's) still work on such an engine.
ensure_engine() {
  if docker info >/dev/null 2>&1; then return; fi
  command -v dockerd >/dev/null || apt_install docker.io
  [ "$(id -u)" = 0 ] || die "no Docker engine answers, and starting one needs root"
  mkdir -p "$DOCKERD_DIR"
  log "starting dockerd (data in $DOCKERD_DIR, no iptables, no default bridge)"
  dockerd --iptables=false --ip6tables=false --bridge=none \
    --data-root "$DOCKERD_DIR/data" --exec-root "$DOCKERD_DIR/exec" \
    -p "$DOCKERD_DIR/dockerd.pid" >"$DOCKERD_DIR/dockerd.log" 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && return
    sleep 0.5
  done
  die "dockerd did not start; its log: $DOCKERD_DIR/dockerd.log ($(tail -n 3 "$DOCKERD_DIR/dockerd.log" | tr '\n' ' '))"
}

# True when IMAGE is here already or can be pulled.
image_here() {
  docker image inspect "$1" >/dev/null 2>&1 || docker pull -q "$1" >/dev/null 2>&1
}

# The client to build with: BuildKit builds only the stages a target needs and takes
# `RUN --mount=type=secret`. A client without the buildx plugin cannot use it (the classic
# builder would, for one, pull the Rust image even with BINARIES=prebuilt); Debian's own
# client (docker.io, /usr/bin/docker) talks to the daemon's built-in BuildKit.
build_client() {
  if ! docker buildx version >/dev/null 2>&1 && [ -x /usr/bin/docker ]; then
    echo /usr/bin/docker
  else
    echo docker
  fi
}
docker_build() {
  DOCKER_BUILDKIT=1 "$(build_client)" build "$@"
}

# "42.9 MB": the size of IMAGE as `docker images` counts it (all layers).
image_size() {
  docker image inspect --format '{{.Size}}' "$1" | awk '{ printf "%.1f MB", $1 / 1e6 }'
}

# Sets RUNTIME_BASE to an image that is here: the given one (default: distroless) if it can
# be had, else scalable-webhook/runtime-base:bookworm, built by container-base.sh if missing
# (or when REBUILD_BASE is set).
ensure_runtime_base() {
  RUNTIME_BASE="${RUNTIME_BASE:-gcr.io/distroless/cc-debian12:nonroot}"
  image_here "$RUNTIME_BASE" && return
  RUNTIME_BASE="scalable-webhook/runtime-base:bookworm"
  if [ -n "${REBUILD_BASE:-}" ] || ! docker image inspect "$RUNTIME_BASE" >/dev/null 2>&1; then
    log "the distroless base cannot be pulled here: building $RUNTIME_BASE from Debian packages"
    "$REPO_ROOT/scripts/container-base.sh" "$RUNTIME_BASE"
  fi
}

# For BINARIES=prebuilt: ingest and worker built on this (Debian 12) host, copied stripped into
# docker/prebuilt, as the builder stage's `install -s` does. The profile is SW_BUILD_PROFILE:
# dist by default (what the builder stage builds), dev to reuse the debug binaries a test run
# has just built (CI does, as for the fault runs: the same runtime stage, a larger image).
# PREBUILT_DIR=dir takes them from there instead. Sets PREBUILT_FROM.
prebuild_binaries() {
  local profile="${SW_BUILD_PROFILE:-dist}" from="${PREBUILT_DIR:-}"
  if [ -z "$from" ]; then
    log "no Rust builder image here: building the binaries on the host (profile $profile) for BINARIES=prebuilt"
    (cd "$REPO_ROOT" && cargo build --quiet --profile "$profile" --locked -p ingest -p worker --bins)
    [ "$profile" = dev ] && profile=debug
    from="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/$profile"
  fi
  { [ -x "$from/ingest" ] && [ -x "$from/worker" ]; } || die "no ingest and worker binaries in $from"
  mkdir -p "$REPO_ROOT/docker/prebuilt"
  install -s -m 0755 -t "$REPO_ROOT/docker/prebuilt" "$from/ingest" "$from/worker"
  # shellcheck disable=SC2034  # read by the scripts that source this file
  PREBUILT_FROM="$from"
}

# Documentation, manual pages and translations: not needed in a container.
DPKG_OPTS=(--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/locale/*')

# debian_base IMAGE PACKAGES [MMDEBSTRAP_ARGS...] [-- DOCKER_IMPORT_CHANGES...]: a Debian 12
# minbase root file system with PACKAGES (comma-separated), imported as IMAGE, unless IMAGE is
# here already and REBUILD_BASE is not set. The image it replaces goes on REPLACED_IMAGES.
debian_base() {
  local image="$1" packages="$2" started change old
  shift 2
  local strap=() changes=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do strap+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  for change in "$@"; do changes+=(--change "$change"); done
  if [ -z "${REBUILD_BASE:-}" ] && docker image inspect "$image" >/dev/null 2>&1; then
    log "$image is here (REBUILD_BASE=1 makes it again)"
    return
  fi
  command -v mmdebstrap >/dev/null || apt_install mmdebstrap
  [ "$(id -u)" = 0 ] || die "mmdebstrap needs root here"
  started=$(date +%s)
  old="$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)"
  log "mmdebstrap bookworm (minbase + $packages) | docker import $image"
  # No mirror given: Debian's default; stdin closed so that mmdebstrap reads no sources from it.
  mmdebstrap --quiet --variant=minbase --include="$packages" "${DPKG_OPTS[@]}" "${strap[@]}" \
    bookworm - </dev/null | docker import "${changes[@]}" - "$image" >/dev/null
  [ -z "$old" ] || REPLACED_IMAGES+=("$old")
  log "$image: $(image_size "$image") in $(( $(date +%s) - started )) s"
}

# Images a script replaced (their tag moved on; debian_base and the scripts' own builds add
# them): remove_replaced, as an EXIT trap, removes those left dangling (no tag, no image built
# on them).
REPLACED_IMAGES=()
remove_replaced() {
  local i
  # Newest first: an old image goes before the old base it was built on.
  for ((i = ${#REPLACED_IMAGES[@]} - 1; i >= 0; i--)); do
    docker images --no-trunc --filter dangling=true -q | grep -qFx "${REPLACED_IMAGES[i]}" || continue
    docker rmi "${REPLACED_IMAGES[i]}" >/dev/null 2>&1 || true
  done
}
