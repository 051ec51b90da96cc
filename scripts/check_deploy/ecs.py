"""Checks of the ECS task definitions (deploy/ecs/*-task-definition.json): botocore's
RegisterTaskDefinition input model (ParamValidator, plus enums); their env names (exactly the
settings the binaries accept, every setting set, credentials and the image's secret_env names
from Secrets Manager); Fargate size, stop timeout against the drain, command, health check,
awslogs, Prometheus labels and ports; ${...} placeholders being Outputs of the template.
"""
import re

import botocore.session
from botocore.validate import ParamValidator

from .common import (DEPLOY, HELP, IMAGE_SOURCES, STOP_MARGIN, TASK_DEFS, TASK_JSON, TEMPLATE, TEMPLATE_DOC,
                     drain_times, env_map, extra_allowed, json_container, port_of, secret_envs)

# The product contract's settings (SPEC.md, "Configuration"); AWS_ENDPOINT_URL is LocalStack's.
SPEC_SETTINGS = {
    "ingest": {"QUEUE_URL", "LISTEN_ADDR", "METRICS_ADDR", "MAX_BODY_BYTES", "LOG_FORMAT", "AWS_REGION"},
    "worker": {"QUEUE_URL", "DLQ_URL", "DATABASE_URL", "WORKER_CONCURRENCY", "DATABASE_MAX_CONNECTIONS",
               "METRICS_ADDR", "LOG_FORMAT", "AWS_REGION"},
}
# Settings a task definition may leave unset (deploy/README.md says when to set them).
OPTIONAL_UNSET = {
    "ingest": {"FIFO_GROUP_HEADER"},
    "worker": {"WORKER_MAX_IN_FLIGHT", "MAX_MESSAGES_PER_SECOND", "METRICS_SOURCES",
               "PARTITIONS_AHEAD"},  # the worker's default, the same for `worker run` and `worker maintain`
}
# And every OTEL_* setting: tracing stays off unless configured (deploy/README.md, "Tracing";
# tracing.py checks that no endpoint is set by default and what EnableTracing sets).
TRACING_PREFIX = "OTEL_"
CREDENTIALS = {"DATABASE_URL"}  # never in `environment`
FARGATE_SIZES = {256: range(512, 2049, 512), 512: range(1024, 4097, 1024), 1024: range(2048, 8193, 1024),
                 2048: range(4096, 16385, 1024), 4096: range(8192, 30721, 1024),
                 8192: range(16384, 61441, 4096), 16384: range(32768, 122881, 8192)}


def task_definitions_match_the_ecs_api_model():
    problems = []
    model = botocore.session.get_session().get_service_model("ecs")
    shape = model.operation_model("RegisterTaskDefinition").input_shape
    for name, doc in TASK_JSON.items():
        report = ParamValidator().validate(doc, shape)
        if report.has_errors():
            problems += [f"{TASK_DEFS[name].name}: {line}" for line in report.generate_report().splitlines()]
        problems += [f"{TASK_DEFS[name].name}: {p}" for p in enum_problems(doc, shape, "")]
    return problems


def enum_problems(value, shape, path):
    """ParamValidator checks types, required members and minimums, not enums: this does."""
    if shape.type_name == "structure" and isinstance(value, dict):
        return [p for key, member in shape.members.items() if key in value
                for p in enum_problems(value[key], member, f"{path}.{key}".lstrip("."))]
    if shape.type_name == "list" and isinstance(value, list):
        return [p for i, item in enumerate(value) for p in enum_problems(item, shape.member, f"{path}[{i}]")]
    if shape.type_name == "map" and isinstance(value, dict):
        return [p for key, item in value.items() for p in enum_problems(item, shape.value, f"{path}.{key}")]
    if shape.type_name == "string" and shape.enum and value not in shape.enum:
        return [f"{path}: {value!r} is not one of {shape.enum}"]
    return []


def task_definitions_set_exactly_the_settings_the_binaries_accept():
    problems = []
    image_secrets = secret_envs(DEPLOY / "sources.toml")
    for name, doc in TASK_JSON.items():
        container = json_container(name)
        env = [e["name"] for e in container.get("environment", [])]
        secrets = [s["name"] for s in container.get("secrets", [])]
        where = TASK_DEFS[name].name
        accepted = HELP[name] | (image_secrets if name == "ingest" else set())
        for var in sorted(set(env + secrets)):
            if var not in accepted and not extra_allowed(var):
                problems.append(f"{where}: {var} is not a setting of `{name}` (not in its --help)")
        for var in sorted({v for v in env + secrets if env.count(v) + secrets.count(v) > 1}):
            problems.append(f"{where}: {var} is set more than once")
        wanted_run = HELP["worker run"] if name == "worker" else HELP["ingest"]
        wanted = {v for v in wanted_run | SPEC_SETTINGS[name] if not v.startswith(TRACING_PREFIX)}
        for var in sorted(wanted - OPTIONAL_UNSET[name] - set(env) - set(secrets)):
            problems.append(f"{where}: setting {var} is not set (set it, or list it in OPTIONAL_UNSET with a reason)")
        for var in sorted(CREDENTIALS & set(env)):
            problems.append(f"{where}: {var} is a credential: inject it through `secrets`, not `environment`")
        if name == "ingest":
            sources = env_map(container["environment"]).get("SOURCES_FILE")
            if sources != IMAGE_SOURCES:
                problems.append(f"{where}: SOURCES_FILE should be {IMAGE_SOURCES} (deploy/sources.toml in the image)")
            if set(secrets) != image_secrets:
                problems.append(f"{where}: secrets {sorted(secrets)} differ from the secret_env names of "
                                f"deploy/sources.toml {sorted(image_secrets)} (ingest refuses to start without them)")
    return problems


def task_definitions_have_fargate_shape_timings_health_logs_and_labels():
    problems = []
    for name, doc in TASK_JSON.items():
        where = TASK_DEFS[name].name
        c = json_container(name)
        env = env_map(c["environment"])
        if doc.get("networkMode") != "awsvpc" or doc.get("requiresCompatibilities") != ["FARGATE"]:
            problems.append(f"{where}: needs networkMode awsvpc and requiresCompatibilities [FARGATE]")
        cpu, memory = int(doc["cpu"]), int(doc["memory"])
        if memory not in FARGATE_SIZES.get(cpu, ()):
            problems.append(f"{where}: cpu {cpu} with memory {memory} is not a Fargate size")
        drain = drain_times(name, env)
        stop = c.get("stopTimeout", 30)
        if not drain + STOP_MARGIN <= stop <= 120:
            problems.append(f"{where}: stopTimeout {stop} must be >= {drain + STOP_MARGIN} (drain {drain} s "
                            f"+ {STOP_MARGIN}) and <= 120 (Fargate's maximum)")
        if c.get("command", [None])[0] != name:
            problems.append(f"{where}: command should start with {name!r}")
        if c.get("healthCheck", {}).get("command") != ["CMD", name, "healthcheck"]:
            problems.append(f"{where}: healthCheck.command should be [\"CMD\", \"{name}\", \"healthcheck\"]")
        log = c.get("logConfiguration", {})
        if log.get("logDriver") != "awslogs" or not {"awslogs-group", "awslogs-region", "awslogs-stream-prefix"} <= set(log.get("options", {})):
            problems.append(f"{where}: needs awslogs with group, region and stream prefix")
        metrics_port = port_of(env["METRICS_ADDR"])
        labels = c.get("dockerLabels", {})
        for key, want in (("PROMETHEUS_EXPORTER_PORT", str(metrics_port)), ("PROMETHEUS_EXPORTER_PATH", "/metrics"),
                          ("PROMETHEUS_EXPORTER_JOB_NAME", name), ("ECS_PROMETHEUS_EXPORTER_PORT", str(metrics_port)),
                          ("ECS_PROMETHEUS_JOB_NAME", name)):
            if labels.get(key) != want:
                problems.append(f"{where}: dockerLabels.{key} should be {want!r}")
        ports = {m["containerPort"] for m in c.get("portMappings", [])}
        want_ports = {metrics_port} | ({port_of(env["LISTEN_ADDR"])} if name == "ingest" else set())
        if ports != want_ports:
            problems.append(f"{where}: portMappings {sorted(ports)} should be {sorted(want_ports)}")
    return problems


def task_definition_placeholders_are_stack_outputs():
    outputs = set(TEMPLATE_DOC.get("Outputs", {}))
    problems = []
    for name, path in TASK_DEFS.items():
        for placeholder in sorted(set(re.findall(r"\$\{([A-Za-z0-9]+)\}", path.read_text()))):
            if placeholder not in outputs:
                problems.append(f"{path.name}: ${{{placeholder}}} is not an Output of {TEMPLATE.name}")
    return problems
