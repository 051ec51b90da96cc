#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine with Rust: makes sure PostgreSQL runs
# (installing it with apt if missing), installs and starts LocalStack on the host, installs
# the OTLP receiver the tracing tests export to (Node.js from apt if missing), checks
# the deployment files (scripts/check-deploy.sh), then runs every test in the workspace
# (unit and end-to-end). Extra arguments go to cargo test.
#   scripts/test.sh
#   scripts/test.sh -p e2e-tests -- pipeline
# LocalStack is stopped again at the end if this script started it.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v cargo >/dev/null || die "cargo not found: install Rust first (https://rustup.rs)"
command -v cc >/dev/null || apt_install gcc libc6-dev

trap stop_local_stack EXIT
start_local_stack

# Databases left behind by end-to-end tests that failed in earlier runs.
leftovers="$(psql -X -q -tA -h 127.0.0.1 -U postgres -d postgres \
  -c "SELECT datname FROM pg_database WHERE datname LIKE 'e2e\_%'")"
for db in $leftovers; do
  psql -X -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null
done

# Deployment files (Dockerfile, compose, ECS task definitions, CloudFormation, alerts) are
# checked offline: there is no Docker engine or AWS account in CI.
"$REPO_ROOT/scripts/check-deploy.sh"

# The OTLP receiver the tracing tests export to (from npm).
"$REPO_ROOT/scripts/otlp-receiver.sh" install

cd "$REPO_ROOT"
log "cargo test --workspace $*"
cargo test --workspace "$@"
