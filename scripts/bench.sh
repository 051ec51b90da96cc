#!/usr/bin/env bash
# Benchmarks: commands that print figures (never pass/fail tests). Starts the local stack
# like scripts/test.sh, builds in release mode, and runs one benchmark.
#   scripts/bench.sh worker [--messages 10000] [--rounds 6] [--sdk-neighbour-cpu 20] [--trace] [--set NAME=VALUE]
#   scripts/bench.sh ingest [--clients 64] [--seconds 10] [--rounds 3] [--body-bytes 150] [--memory-connections 256] [--no-pin] [--set NAME=VALUE]
#   scripts/bench.sh pipeline [--burst-rate 2500] [--burst-seconds 10] [--quiet-seconds 60] [--concurrency 16] [--connections 4]
#   scripts/bench.sh large [--clients 16] [--mib 25] [--per-client 2] [--set NAME=VALUE]
#   scripts/bench.sh slow-uploads [--large-stalled 100] [--small-stalled 400] [--sent-bytes 1024] [--signed-small 20] [--signed-large 4] [--set NAME=VALUE]
#   scripts/bench.sh latency [--levels 10,50,80] [--seconds 30] [--capacity-seconds 15] [--set NAME=VALUE] [--ingest-set NAME=VALUE]
#   scripts/bench.sh fairness [--flood 20000] [--quiet-rate 10] [--clients 64]
#   scripts/bench.sh partitions [--part inserts|retention|both] [--connections 4] [--seconds 20] [--rounds 3] [--variants old,new] [--explain] [--rate 200] [--phase-seconds 60] [--retention-rounds 3] [--old-rows 1000000]
#   scripts/bench.sh neighbour [--messages 50000] [--seconds 40] [--slow-from 10] [--slow-until 25] [--clients 4] [--think-ms 5] [--hogs 6] [--insert-cpu 10000] [--concurrency 16] [--calibrate-seconds 5] [--plot docs/neighbour.png] [--set NAME=VALUE]
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

what="${1:-}"
case "$what" in
  ingest|worker|pipeline|latency|fairness|neighbour|large|slow-uploads|partitions) shift ;;
  *) echo "usage: $0 ingest|worker|pipeline|latency|fairness|neighbour|large|slow-uploads|partitions [options]   (options: $0 ingest --help, $0 worker --help, $0 pipeline --help, $0 neighbour --help, $0 partitions --help)" >&2; exit 2 ;;
esac
command -v cargo >/dev/null || die "cargo not found: install Rust first (https://rustup.rs)"
trap stop_local_stack EXIT
start_local_stack
cd "$REPO_ROOT"
cargo run --quiet --release -p e2e-tests --bin "bench-$what" -- "$@"
