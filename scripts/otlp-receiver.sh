#!/usr/bin/env bash
# The end-to-end tests' OTLP receiver (tests/helpers/otlp-receiver/receiver.js): Elastic's
# mock OTLP server from the npm registry, at the version tests/helpers/otlp-receiver's
# package-lock.json pins, installed under $STATE_DIR/otlp-receiver. Installs Node.js and npm
# with apt where they are missing.
#   scripts/otlp-receiver.sh install   # skipped when the installed lock matches
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SRC="$REPO_ROOT/tests/helpers/otlp-receiver"
DEST="$STATE_DIR/otlp-receiver"

install_receiver() {
  command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm
  if [ -d "$DEST/node_modules/@elastic/mockotlpserver" ] \
    && cmp -s "$SRC/package-lock.json" "$DEST/package-lock.json"; then
    return 0
  fi
  log "installing the OTLP receiver (npm ci) into $DEST"
  rm -rf "$DEST"
  mkdir -p "$DEST"
  cp "$SRC/package.json" "$SRC/package-lock.json" "$DEST/"
  (cd "$DEST" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >&2)
}

case "${1:-}" in
  install) install_receiver ;;
  *) die "usage: $0 install" ;;
esac
