#!/usr/bin/env bash
# Make sure a local PostgreSQL accepts passwordless (trust) connections as user
# postgres at 127.0.0.1:5432, installing (apt) and/or starting it as needed.
#   scripts/postgres.sh ensure   # install/start/configure, wait until ready
#   scripts/postgres.sh url      # print the connection URL
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PG_HOST=127.0.0.1
PG_PORT=5432
PG_URL="postgres://postgres@$PG_HOST:$PG_PORT/postgres"
TRUST_MARK="# scalable-webhook dev: trust local connections (added by scripts/postgres.sh)"

pg_ready() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; }

# A real query as postgres, never prompting and never using a stored password.
pg_trusts() {
  env -u PGPASSWORD PGPASSFILE=/dev/null PGCONNECT_TIMEOUT=5 \
    psql -w -X -q -tA -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -c 'select 1' >/dev/null 2>&1
}

# Newest cluster version under /etc/postgresql (empty if none).
pg_version() {
  [ -d /etc/postgresql ] || return 0
  find /etc/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort -V | tail -n 1
}

wait_ready() {
  local i
  for i in $(seq 1 30); do
    pg_ready && return 0
    [ "$i" -eq 1 ] && log "waiting for PostgreSQL at $PG_HOST:$PG_PORT (up to 30 s)"
    sleep 1
  done
  die "PostgreSQL not ready at $PG_HOST:$PG_PORT after 30 s (see /var/log/postgresql/)"
}

# Put trust lines for local socket, 127.0.0.1/32 and ::1/128 at the top of pg_hba.conf
# (first match wins), then reload if running. Idempotent thanks to the marker line.
configure_trust() {
  local hba="/etc/postgresql/$1/main/pg_hba.conf" tmp
  if $SUDO grep -qxF "$TRUST_MARK" "$hba"; then
    log "$hba already has our trust lines"
    return 0
  fi
  log "adding trust auth for local, 127.0.0.1/32 and ::1/128 to $hba"
  tmp="$(mktemp)"
  { printf '%s\n' "$TRUST_MARK" \
      'local all all trust' \
      'host all all 127.0.0.1/32 trust' \
      'host all all ::1/128 trust' ''
    $SUDO cat "$hba"; } >"$tmp"
  $SUDO cp "$tmp" "$hba"   # cp into the existing file keeps its owner and mode
  rm -f "$tmp"
  if pg_ready; then $SUDO pg_ctlcluster --skip-systemctl-redirect "$1" main reload; fi
}

ensure() {
  local fresh="" ver
  ver="$(pg_version)"
  if [ -z "$ver" ] || ! command -v pg_ctlcluster >/dev/null; then
    log "PostgreSQL server not installed; installing it"
    apt_install postgresql postgresql-client
    fresh=1
    ver="$(pg_version)"
    if [ -z "$ver" ]; then   # package installed without creating the main cluster
      ver="$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort -V | tail -n 1)"
      log "creating cluster $ver/main"
      $SUDO pg_createcluster "$ver" main
    fi
  elif ! command -v psql >/dev/null || ! command -v pg_isready >/dev/null; then
    apt_install postgresql-client
  fi
  [ -n "$ver" ] || die "cannot find the PostgreSQL version under /etc/postgresql"
  if [ -n "$fresh" ]; then configure_trust "$ver"; fi

  if pg_ready; then
    log "PostgreSQL $ver is running"
  else
    log "starting PostgreSQL cluster $ver/main"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$ver" main start
  fi
  wait_ready

  if ! pg_trusts; then
    log "psql -h $PG_HOST -U postgres without a password was refused: pg_hba.conf does not trust it"
    configure_trust "$ver"
    for _ in 1 2 3 4 5; do pg_trusts && break; sleep 1; done   # the reload is asynchronous
    pg_trusts || die "still cannot connect as postgres without a password; check /etc/postgresql/$ver/main/pg_hba.conf and postgresql.conf (port $PG_PORT, listen_addresses)"
  fi
  log "ready: $PG_URL"
}

case "${1:-}" in
  ensure) ensure ;;
  # For the fault matrix's restart row: stops the server (fast mode); `ensure` starts it.
  stop) $SUDO pg_ctlcluster --skip-systemctl-redirect --mode fast "$(pg_version)" main stop ;;
  url) echo "$PG_URL" ;;
  *) echo "usage: $0 ensure|stop|url" >&2; exit 2 ;;
esac
