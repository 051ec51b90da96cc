#!/usr/bin/env bash
# Fault matrix (issue 18): each production fault under steady load through the whole system,
# one row each, printed as one table (written to docs/fault-matrix.md by the full matrix):
# accepted, stored, lost, duplicates, in the DLQ, time to recover, slowest 202. Exits non-zero
# when a row loses, duplicates or dead-letters a webhook or recovers in over 60 s. Starts the
# local stack like scripts/bench.sh and builds in release mode (SW_BUILD_PROFILE=dev: debug).
#   scripts/fault-matrix.sh [--quick] [--only NAME[,NAME]] [--fault-seconds N] [--output PATH]
# The full matrix restarts the PostgreSQL server (row pg-restart): run it alone.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v cargo >/dev/null || die "cargo not found: install Rust first (https://rustup.rs)"
trap stop_local_stack EXIT
start_local_stack
cd "$REPO_ROOT"
run_e2e_bin fault-matrix "$@"
