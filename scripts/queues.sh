#!/usr/bin/env bash
# Create or delete an SQS queue and its dead-letter queue on the local stack.
#   scripts/queues.sh create NAME [--max-receive-count N] [--visibility-timeout S]
#   scripts/queues.sh delete NAME
# create is idempotent: DLQ "NAME-dlq" (FIFO: "BASE-dlq.fifo", 14-day retention), then
# NAME with RedrivePolicy (maxReceiveCount N, default 5), VisibilityTimeout S (default 60)
# and 20 s long polling. Prints QUEUE_URL=... and DLQ_URL=... on stdout.
# Needs LocalStack running (scripts/localstack.sh start); honours AWS_ENDPOINT_URL etc.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ -x "$LS_VENV/bin/python" ] || die "LocalStack venv missing; run scripts/localstack.sh start first"
case "${1:-}" in
  create | delete) exec "$LS_VENV/bin/python" "$REPO_ROOT/scripts/queues.py" "$@" ;;
  *) echo "usage: $0 create NAME [--max-receive-count N] [--visibility-timeout S] | delete NAME" >&2; exit 2 ;;
esac
