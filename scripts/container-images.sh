#!/usr/bin/env bash
# Builds, from package registries alone, the service images docker/compose.yaml needs, for
# machines that cannot pull localstack/localstack:4.13.1 and postgres:17 (no image registry,
# but Debian's packages and PyPI):
#   scripts/container-images.sh [localstack|postgres|all]      # default: all
# then, with the names it prints:
#   LOCALSTACK_IMAGE=scalable-webhook/localstack:4.13.1 POSTGRES_IMAGE=scalable-webhook/postgres:15-bookworm \
#     docker compose -f docker/compose.yaml up
# The images (names from the environment, defaults here):
#   PYTHON_BASE       scalable-webhook/python-base:bookworm    Debian 12 minbase with python3 (3.11),
#                     python3-venv, curl and ca-certificates, by mmdebstrap + docker import
#   LOCALSTACK_IMAGE  scalable-webhook/localstack:4.13.1        docker/localstack/Dockerfile on it:
#                     localstack-core[base-runtime]==4.13.1 from PyPI with scripts/localstack-constraints.txt
#   POSTGRES_BASE     scalable-webhook/postgres-base:bookworm  Debian 12 minbase with postgresql-15
#   POSTGRES_IMAGE    scalable-webhook/postgres:15-bookworm    docker/postgres/Dockerfile on it
# The bases are made once (REBUILD_BASE=1 makes them again: Debian's security updates); the
# images are built every run, from BuildKit's cache when nothing changed. pip verifies TLS
# against CA_BUNDLE (default: this machine's /etc/ssl/certs/ca-certificates.crt), given to the
# build as a secret: it is in no layer of the image. Prints each image's size.
# Needs a running Docker engine with BuildKit (Debian's docker.io client does) and root for
# mmdebstrap.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$(dirname "${BASH_SOURCE[0]}")/docker-lib.sh"

PYTHON_BASE="${PYTHON_BASE:-scalable-webhook/python-base:bookworm}"
LOCALSTACK_IMAGE="${LOCALSTACK_IMAGE:-scalable-webhook/localstack:4.13.1}"
POSTGRES_BASE="${POSTGRES_BASE:-scalable-webhook/postgres-base:bookworm}"
POSTGRES_IMAGE="${POSTGRES_IMAGE:-scalable-webhook/postgres:15-bookworm}"
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
# build IMAGE DOCKERFILE CONTEXT [ARGS...]
build() {
  local image="$1" dockerfile="$2" context="$3" started old
  shift 3
  started=$(date +%s)
  old="$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)"
  log "$(build_client) build -f $dockerfile $* -t $image $context"
  docker_build --quiet -f "$REPO_ROOT/$dockerfile" "$@" -t "$image" "$REPO_ROOT/$context" >/dev/null
  [ -z "$old" ] || REPLACED_IMAGES+=("$old")
  log "$image: $(image_size "$image") in $(( $(date +%s) - started )) s"
}

localstack() {
  debian_base "$PYTHON_BASE" ca-certificates,python3,python3-venv,curl \
    -- 'ENV LANG=C.UTF-8' 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' 'CMD ["/bin/bash"]'
  local secret=()
  if [ -f "$CA_BUNDLE" ]; then
    secret=(--secret "id=ca,src=$CA_BUNDLE")
  else
    log "no CA bundle at $CA_BUNDLE: pip verifies PyPI's certificate against the image's own bundle"
  fi
  # --network host: the build reaches PyPI as this machine does (no default bridge needed).
  build "$LOCALSTACK_IMAGE" docker/localstack/Dockerfile scripts --network host \
    --build-arg "PYTHON_BASE=$PYTHON_BASE" "${secret[@]}"
}

postgres() {
  # Debian's postinst creates a cluster `main` (the entry point makes its own, in
  # /var/lib/postgresql/data): gone. So is LLVM (105 MB), used only by the JIT, which
  # PostgreSQL leaves off when its provider library is missing. ("$1": the root, to mmdebstrap.)
  # shellcheck disable=SC2016
  debian_base "$POSTGRES_BASE" postgresql-15 \
    --customize-hook='rm -rf "$1"/etc/postgresql/15 "$1"/var/lib/postgresql/15' \
    --customize-hook='rm -rf "$1"/usr/lib/*-linux-gnu/libLLVM-* "$1"/usr/lib/postgresql/15/lib/llvmjit* "$1"/usr/lib/postgresql/15/lib/bitcode' \
    -- 'ENV LANG=C.UTF-8' 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' 'CMD ["/bin/bash"]'
  # --network none: nothing to fetch (and this engine may have no default bridge).
  build "$POSTGRES_IMAGE" docker/postgres/Dockerfile docker/postgres --network none --build-arg "POSTGRES_BASE=$POSTGRES_BASE"
}

trap remove_replaced EXIT

command -v docker >/dev/null || die "docker not found (scripts/compose-check.sh installs and starts an engine)"
docker info >/dev/null 2>&1 || die "no Docker engine answers (scripts/compose-check.sh starts one)"
case "${1:-all}" in
  localstack) localstack ;;
  postgres) postgres ;;
  all) localstack; postgres ;;
  *) echo "usage: $0 [localstack|postgres|all]" >&2; exit 2 ;;
esac
