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
. "$(dirname "${BASH_SOURCE[0]}")/docker-lib.sh"

image="${1:-scalable-webhook/rust:1.95.0-bookworm}"
command -v docker >/dev/null || die "docker not found (scripts/container-check.sh installs and starts an engine)"
sysroot="$(rustc --print sysroot)"
version="$(rustc --version)"
case "$version" in "rustc 1.95."*) ;; *) die "this machine's rustc is '$version', the project needs 1.95" ;; esac
[ -x "$sysroot/bin/cargo" ] || die "no cargo beside rustc in $sysroot"

trap remove_replaced EXIT
log "with $version from $sysroot"
# The hook runs on this host once the packages are in; "$1" is the new root.
debian_base "$image" ca-certificates,gcc,libc6-dev \
  --customize-hook="mkdir -p \"\$1\"/usr/local/cargo && cp -a '$sysroot/bin/.' \"\$1\"/usr/local/bin/ && cp -a '$sysroot/lib/.' \"\$1\"/usr/local/lib/" \
  -- 'ENV CARGO_HOME=/usr/local/cargo' 'ENV PATH=/usr/local/cargo/bin:/usr/local/bin:/usr/bin:/bin' 'WORKDIR /'
