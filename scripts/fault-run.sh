#!/usr/bin/env bash
# Fault run: steady webhook load while the worker is killed, ingest restarted, PostgreSQL cut
# and SQS frozen; then checks that every accepted webhook is stored exactly once. Starts the
# local stack like scripts/bench.sh and builds in release mode (SW_BUILD_PROFILE=dev: debug).
#   scripts/fault-run.sh [--quick] [--clients 16] [--seconds 60] [--db-outage-seconds 20] [--sqs-freeze-seconds 10]
# Run it alone: it freezes LocalStack (SIGSTOP), which stalls every other user of it.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v cargo >/dev/null || die "cargo not found: install Rust first (https://rustup.rs)"
trap stop_local_stack EXIT
start_local_stack
cd "$REPO_ROOT"
run_e2e_bin fault-run "$@"
