#!/bin/sh
# Entry point of docker/postgres/Dockerfile (PostgreSQL 15 from Debian 12's packages): what
# docker/compose.yaml uses of the public postgres image's entry point, and no more.
# On first start (no PG_VERSION in PGDATA, default /var/lib/postgresql/data) it runs initdb with
# superuser POSTGRES_USER (default postgres) and password POSTGRES_PASSWORD (required),
# creates POSTGRES_DB (default: POSTGRES_USER), and lets the server listen on all interfaces
# with password (scram-sha-256) authentication; local socket connections are trusted, as in
# the public image (`docker compose exec postgres psql -U postgres`). Started as root, it
# gives PGDATA to the postgres user and drops to it. Then it execs the command (postgres).
set -eu

: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
export PGDATA

if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /run/postgresql
  chown postgres:postgres "$PGDATA" /run/postgresql
  chmod 0700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ "${1:-}" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "entrypoint: POSTGRES_PASSWORD is not set; the server would accept no password login" >&2
    exit 1
  fi
  pwfile="$(mktemp)"
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust \
    --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pwfile"
  printf "listen_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
  printf 'host all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
  if [ "$POSTGRES_DB" != postgres ]; then
    # A server for CREATE DATABASE only: no TCP, its socket in a directory of its own, so
    # that pg_isready (the healthcheck) does not see it and report ready too early.
    sockets="$(mktemp -d)"
    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories='$sockets'" -w start >/dev/null
    createdb --host="$sockets" --username="$POSTGRES_USER" --maintenance-db=postgres -- "$POSTGRES_DB"
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    rmdir "$sockets"
  fi
  echo "entrypoint: initialised $PGDATA (user $POSTGRES_USER, database $POSTGRES_DB)" >&2
fi

exec "$@"
