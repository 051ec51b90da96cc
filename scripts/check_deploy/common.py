"""Inputs and helpers shared by the checks: paths, the parsed task definitions, template and
compose file (loaded on import, so a file that does not parse stops the run), the env names
the binaries accept (HELP, filled in by __main__ from their --help) and small helpers.
The template is checked as deployed with EnableTracing false (TEMPLATE_DOC, RESOURCES: the
default, which the JSON task definitions equal) and with it true (TRACING_DOC).
"""
import json
import re
import tomllib
from pathlib import Path

import yaml
from cfnlint.decode import cfn_yaml

ROOT = Path(__file__).resolve().parent.parent.parent
DEPLOY = ROOT / "deploy"
DOCKER = ROOT / "docker"
TASK_DEFS = {"ingest": DEPLOY / "ecs/ingest-task-definition.json",
             "worker": DEPLOY / "ecs/worker-task-definition.json"}
TEMPLATE = DEPLOY / "cloudformation.yaml"
COMPOSE = DOCKER / "compose.yaml"
IMAGE_SOURCES = "/etc/scalable-webhook/sources.toml"  # where the Dockerfile puts deploy/sources.toml
STOP_MARGIN = 5  # seconds stopTimeout must exceed the drain by

HELP = {}  # env names accepted per binary (and worker subcommand), from --help; filled in by __main__.main()

NOTES = []  # printed by __main__ beside the results (not failures)


def env_names(help_text):
    return set(re.findall(r"\[env: ([A-Z][A-Z0-9_]*)[=\]]", help_text))


def load_help(help_dir):
    texts = {p.stem: p.read_text() for p in Path(help_dir).glob("*.txt")}
    names = {k: env_names(v) for k, v in texts.items()}
    for key in ("ingest", "worker-run", "worker-migrate", "worker-redrive", "worker-healthcheck", "worker-maintain"):
        if not names.get(key):
            raise SystemExit(f"check_deploy: no [env: ...] lines in {help_dir}/{key}.txt")
    worker_all = (names["worker-run"] | names["worker-migrate"] | names["worker-redrive"] | names["worker-healthcheck"]
                  | names["worker-maintain"])
    return {"ingest": names["ingest"], "worker": worker_all, "worker run": names["worker-run"],
            "worker migrate": names["worker-migrate"], "worker redrive": names["worker-redrive"],
            "worker maintain": names["worker-maintain"]}


def secret_envs(path):
    data = tomllib.loads(Path(path).read_text())
    return {name for source in data.get("sources", {}).values() for name in source.get("secret_env", [])}


def extra_allowed(name):
    """Read by the SDKs beyond --help: AWS_* (the AWS SDK), RUST_LOG, and OTEL_* (the
    OpenTelemetry SDK reads more of them than the binaries list, e.g. OTEL_TRACES_SAMPLER)."""
    return name.startswith(("AWS_", "OTEL_")) or name == "RUST_LOG"


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


NO_VALUE = object()


def resolve(node, conditions):
    """`node` with every Fn::If on a condition named in `conditions` (name -> bool) replaced by
    its chosen branch, and what chose AWS::NoValue left out; other Fn::If stay as they are."""
    if isinstance(node, dict):
        branches = node.get("Fn::If")
        if len(node) == 1 and isinstance(branches, list) and branches[0] in conditions:
            chosen = resolve(branches[1] if conditions[branches[0]] else branches[2], conditions)
            return NO_VALUE if chosen == {"Ref": "AWS::NoValue"} else chosen
        items = ((key, resolve(value, conditions)) for key, value in node.items())
        return {key: value for key, value in items if value is not NO_VALUE}
    if isinstance(node, list):
        return [value for value in (resolve(item, conditions) for item in node) if value is not NO_VALUE]
    return node


TRACING_CONDITION = "TracingEnabled"  # EnableTracing is "true"
TEMPLATE_RAW = cfn_yaml.load(str(TEMPLATE))
TEMPLATE_DOC = resolve(TEMPLATE_RAW, {TRACING_CONDITION: False})
TRACING_DOC = resolve(TEMPLATE_RAW, {TRACING_CONDITION: True})
RESOURCES = TEMPLATE_DOC["Resources"]
TASK_JSON = {name: json.loads(path.read_text()) for name, path in TASK_DEFS.items()}
COMPOSE_DOC = yaml.safe_load(COMPOSE.read_text())


def json_container(name):
    return TASK_JSON[name]["containerDefinitions"][0]


def env_map(items, key="name", value="value"):
    return {item[key]: item[value] for item in items}


WORKER_EXIT_MARGIN = 12  # the worker exits within its grace + this (EXIT_MARGIN + the pool's close)


def drain_times(name, env):
    grace = int(env.get("SHUTDOWN_GRACE_SECONDS", 25))
    if name == "ingest":
        return grace + int(env.get("DEREGISTRATION_DELAY_SECONDS", 0))
    return grace + WORKER_EXIT_MARGIN
