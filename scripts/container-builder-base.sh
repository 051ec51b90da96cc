#!/usr/bin/env bash
# Builds a Rust builder base for docker/Dockerfile's builder stage from this machine's own
# Rust toolchain, for machines that cannot pull rust:1.95.0-bookworm (Debian's rustc is too
# old for the project): Debian 12 minbase with gcc, libc6-dev and ca-certificates (mmdebstrap),
# plus the toolchain that `rustc --print sysroot` names (its bin/ and lib/, no docs) in
# /usr/local, and CARGO_HOME=/usr/local/cargo as in the public image.
#   scripts/container-builder-base.sh [IMAGE]     # default scalable-webhook/rust:1.95.0-bookworm
# Then the whole Dockerfile, builder stage included (cargo-chef, the dependency layer, the
# crate registry's cache mount, the CA secret):
#   DOCKER_BUILDKIT=1 docker build -f docker/Dockerfile --network host \
#     --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt \
#     --build-arg BUILDER_BASE=scalable-webhook/rust:1.95.0-bookworm \
#     --build-arg RUNTIME_BASE=scalable-webhook/runtime-base:bookworm -t scalable-webhook .
# Needs a running Docker engine and root for mmdebstrap.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

image="${1:-scalable-webhook/rust:1.95.0-bookworm}"
command -v mmdebstrap >/dev/null || apt_install mmdebstrap
command -v docker >/dev/null || die "docker not found (scripts/container-check.sh installs and starts an engine)"
sysroot="$(rustc --print sysroot)"
version="$(rustc --version)"
case "$version" in "rustc 1.95."*) ;; *) die "this machine's rustc is '$version', the project needs 1.95" ;; esac
[ -x "$sysroot/bin/cargo" ] || die "no cargo beside rustc in $sysroot"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
log "mmdebstrap bookworm (minbase + gcc, libc6-dev, ca-certificates)"
mmdebstrap --quiet --variant=minbase --include=ca-certificates,gcc,libc6-dev bookworm "$work/root"
log "adding $version from $sysroot"
mkdir -p "$work/root/usr/local/cargo"
cp -a "$sysroot/bin/." "$work/root/usr/local/bin/"
cp -a "$sysroot/lib/." "$work/root/usr/local/lib/"

log "importing $image"
docker import \
  --change 'ENV CARGO_HOME=/usr/local/cargo' \
  --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/bin:/usr/bin:/bin' \
  --change 'WORKDIR /' \
  - "$image" < <(tar -C "$work/root" --numeric-owner -c .) >/dev/null
docker image inspect --format '{{.Size}}' "$image" \
  | awk -v image="$image" '{ printf "[container-builder-base] %s: %.1f MB\n", image, $1 / 1e6 }'
