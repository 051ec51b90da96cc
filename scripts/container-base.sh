#!/usr/bin/env bash
# Builds the runtime base image from Debian 12 packages, for machines that cannot pull
# gcr.io/distroless/cc-debian12:nonroot: what that image promises and no more (glibc and
# libgcc from libc6 and libgcc-s1, the CA bundle, the nonroot user 65532, /tmp; no shell, no
# package manager). mmdebstrap builds a minimal Debian root file system from the package
# registry; the files the binaries need are copied out of it and imported as an image.
#   scripts/container-base.sh [IMAGE]      # default scalable-webhook/runtime-base:bookworm
# Then: docker build --build-arg RUNTIME_BASE=IMAGE ...
# Needs a running Docker engine (DOCKER_HOST as usual) and root for mmdebstrap.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$(dirname "${BASH_SOURCE[0]}")/docker-lib.sh"

image="${1:-scalable-webhook/runtime-base:bookworm}"
command -v mmdebstrap >/dev/null || apt_install mmdebstrap
command -v docker >/dev/null || die "docker not found (scripts/container-check.sh installs and starts an engine)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
log "mmdebstrap bookworm (minbase + ca-certificates)"
mmdebstrap --quiet --variant=minbase --include=ca-certificates bookworm "$work/debian.tar"
mkdir -p "$work/debian" "$work/base"
tar -C "$work/debian" -xf "$work/debian.tar"

# Debian 12 is usr-merged: /lib, /lib64, /bin and /sbin are links into /usr; keep them so.
for link in lib lib64 bin sbin; do
  if [ -L "$work/debian/$link" ]; then
    mkdir -p "$work/base/usr/$link"
    cp -a "$work/debian/$link" "$work/base/$link"
  fi
done
# Every file of libc6 and libgcc-s1 except documentation and the character-set converters
# (gconv: iconv's tables, which nothing here uses), with the directories they sit in.
for package in libc6:amd64 libgcc-s1:amd64; do
  grep -v -e '^/usr/share/doc' -e '^/usr/share/lintian' -e '/gconv/' \
    "$work/debian/var/lib/dpkg/info/$package.list"
done | while read -r path; do
  if [ -f "$work/debian$path" ] || [ -L "$work/debian$path" ]; then
    mkdir -p "$work/base$(dirname "$path")"
    cp -a "$work/debian$path" "$work/base$path"
  fi
done
mkdir -p "$work/base/etc/ssl/certs" "$work/base/tmp" "$work/base/home/nonroot"
cp "$work/debian/etc/ssl/certs/ca-certificates.crt" "$work/base/etc/ssl/certs/"
cp "$work/debian/etc/os-release" "$work/base/etc/os-release" 2>/dev/null \
  || cp -L "$work/debian/usr/lib/os-release" "$work/base/etc/os-release"
cat >"$work/base/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
cat >"$work/base/etc/group" <<'EOF'
root:x:0:
nonroot:x:65532:
EOF
printf 'hosts: files dns\n' >"$work/base/etc/nsswitch.conf"
chmod 1777 "$work/base/tmp"
chown 65532:65532 "$work/base/home/nonroot"
if [ -e "$work/base/bin/sh" ] || [ -e "$work/base/usr/bin/sh" ]; then die "the base has a shell"; fi

log "importing $image"
tar -C "$work/base" --numeric-owner -c . \
  | docker import --change 'USER 65532:65532' --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' - "$image" >/dev/null
log "$image: $(image_size "$image")"
