"""Checks of the optional tracing (deploy/README.md, "Tracing"): off by default everywhere (no
OTLP endpoint in the JSON task definitions, nor in the template with EnableTracing false, which
then has no collector and no X-Ray grant); with EnableTracing true, each task definition has a
non-essential ADOT collector sidecar (pinned image, the built-in ECS config, logs to the
service's log group) that the app's OTEL_EXPORTER_OTLP_ENDPOINT points at, CPU and memory that
fit the task's Fargate size, the task roles may write to X-Ray, and nothing else changes; the
README's JSON snippets for the JSON task definitions fit the ECS API model and the template.
"""
import copy
import json
import re

import botocore.session
from botocore.validate import ParamValidator

from .common import (DEPLOY, HELP, TASK_DEFS, TASK_JSON, TEMPLATE, TEMPLATE_DOC, TEMPLATE_RAW, TRACING_CONDITION,
                     TRACING_DOC, env_map, json_container)
from .ecs import FARGATE_SIZES, enum_problems

PARAMETER, IMAGE_PARAMETER = "EnableTracing", "TracingCollectorImage"
COLLECTOR = "otel-collector"
IMAGE = re.compile(r"public\.ecr\.aws/aws-observability/aws-otel-collector:v\d+\.\d+\.\d+")  # pinned, not :latest
CONFIG = "--config=/etc/ecs/ecs-default-config.yaml"  # built into the image: OTLP in on 4317/4318, X-Ray out
ENDPOINT = "http://localhost:4318"  # that config's OTLP/HTTP receiver, in the same task
ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
XRAY_POLICY = {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/AWSXrayWriteOnlyAccess"}
TASK_ROLES = {"ingest": "IngestTaskRole", "worker": "WorkerTaskRole"}
HELP_KEYS = {"ingest": "ingest", "worker": "worker run"}
README = DEPLOY / "README.md"


def task_definition(doc, app):
    """The properties of the task definition whose containers include `app`, and those by name."""
    for resource in doc["Resources"].values():
        if resource["Type"] == "AWS::ECS::TaskDefinition":
            containers = {c["Name"]: c for c in resource["Properties"]["ContainerDefinitions"]}
            if app in containers:
                return resource["Properties"], containers
    raise KeyError(f"no task definition with a container {app!r} in {TEMPLATE.name}")


def parameter_problems():
    problems = []
    parameters = TEMPLATE_RAW["Parameters"]
    enable = parameters.get(PARAMETER, {})
    if enable.get("Default") != "false" or sorted(enable.get("AllowedValues", [])) != ["false", "true"]:
        problems.append(f'{PARAMETER}: a parameter with Default "false" and AllowedValues ["true", "false"]')
    if not IMAGE.fullmatch(str(parameters.get(IMAGE_PARAMETER, {}).get("Default", ""))):
        problems.append(f"{IMAGE_PARAMETER}: should default to {IMAGE.pattern} (a pinned release)")
    condition = TEMPLATE_RAW.get("Conditions", {}).get(TRACING_CONDITION)
    if condition != {"Fn::Equals": [{"Ref": PARAMETER}, "true"]}:
        problems.append(f'Conditions.{TRACING_CONDITION} should be !Equals [!Ref {PARAMETER}, "true"]')
    groups = TEMPLATE_RAW["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
    grouped = [name for group in groups for name in group["Parameters"]]
    for name in parameters:
        if grouped.count(name) != 1:
            problems.append(f"parameter {name} is in {grouped.count(name)} ParameterGroups, not one")
    return problems


def off_problems():
    """Tracing is off in the JSON task definitions and in the template with EnableTracing false."""
    problems = []
    for app in TASK_ROLES:
        for var in ENDPOINTS:
            if var in env_map(json_container(app).get("environment", [])):
                problems.append(f"{TASK_DEFS[app].name}: sets {var}; tracing stays off by default")
        _, containers = task_definition(TEMPLATE_DOC, app)
        if list(containers) != [app]:
            problems.append(f"{TEMPLATE.name} {app}, EnableTracing false: containers {list(containers)}, not [{app!r}]")
        app_env = env_map(containers[app]["Environment"], "Name", "Value")
        for var in ENDPOINTS:
            if var in app_env:
                problems.append(f"{TEMPLATE.name} {app}, EnableTracing false: sets {var}")
        if "ManagedPolicyArns" in TEMPLATE_DOC["Resources"][TASK_ROLES[app]]["Properties"]:
            problems.append(f"{TASK_ROLES[app]}, EnableTracing false: has ManagedPolicyArns (X-Ray only with tracing)")
    return problems


def on_problems():
    """With EnableTracing true: the sidecar, the endpoint, the sizes and the X-Ray grant."""
    problems = []
    for app, role in TASK_ROLES.items():
        where = f"{TEMPLATE.name} {app}, EnableTracing true"
        props, containers = task_definition(TRACING_DOC, app)
        collector, main = containers.get(COLLECTOR), containers[app]
        if list(containers) != [app, COLLECTOR] or collector is None:
            problems.append(f"{where}: containers {list(containers)}, not [{app!r}, {COLLECTOR!r}]")
            continue
        if collector.get("Essential") is not False:
            problems.append(f"{where}: {COLLECTOR} must have Essential: false (the app runs on without it)")
        if collector.get("Image") != {"Ref": IMAGE_PARAMETER}:
            problems.append(f"{where}: {COLLECTOR} image should be !Ref {IMAGE_PARAMETER}")
        if collector.get("Command") != [CONFIG]:
            problems.append(f"{where}: {COLLECTOR} command should be [{CONFIG}]")
        if collector.get("PortMappings"):
            problems.append(f"{where}: {COLLECTOR} needs no port mappings (the app reaches it on localhost)")
        log, app_log = collector.get("LogConfiguration", {}), main["LogConfiguration"]
        options = log.get("Options", {})
        if log.get("LogDriver") != "awslogs" or options.get("awslogs-group") != app_log["Options"]["awslogs-group"] \
                or options.get("awslogs-stream-prefix") != "otel":
            problems.append(f"{where}: {COLLECTOR} should log with awslogs to the app's log group, stream prefix otel")
        env = env_map(main["Environment"], "Name", "Value")
        if env.get("OTEL_EXPORTER_OTLP_ENDPOINT") != ENDPOINT:
            problems.append(f"{where}: {app}'s OTEL_EXPORTER_OTLP_ENDPOINT should be {ENDPOINT} (the sidecar)")
        if "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" in env:
            problems.append(f"{where}: {app} sets OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, which wins over the sidecar's")
        if "OTEL_EXPORTER_OTLP_ENDPOINT" not in HELP[HELP_KEYS[app]]:
            problems.append(f"`{HELP_KEYS[app]}` --help lists no OTEL_EXPORTER_OTLP_ENDPOINT")
        if main.get("DependsOn") != [{"ContainerName": COLLECTOR, "Condition": "START"}]:
            problems.append(f"{where}: {app} should depend on {COLLECTOR} START (so it stops before the collector)")
        cpu, memory = int(props["Cpu"]), int(props["Memory"])
        if memory not in FARGATE_SIZES.get(cpu, ()):
            problems.append(f"{where}: cpu {cpu} with memory {memory} is not a Fargate size")
        shares = [c.get("Cpu") for c in containers.values()]
        if None in shares or sum(int(s) for s in shares) > cpu:
            problems.append(f"{where}: every container needs a Cpu share, together at most the task's {cpu} "
                            f"(a container without one gets the least share under contention): {shares}")
        if not collector.get("Memory") or int(collector["Memory"]) > memory // 4:
            problems.append(f"{where}: {COLLECTOR} needs a hard Memory limit of at most a quarter of the task's")
        if TRACING_DOC["Resources"][role]["Properties"].get("ManagedPolicyArns") != [XRAY_POLICY]:
            problems.append(f"{role}, EnableTracing true: ManagedPolicyArns should be [AWSXrayWriteOnlyAccess]")
    changed = {"IngestTaskDefinition", "WorkerTaskDefinition", *TASK_ROLES.values()}
    for name, resource in TRACING_DOC["Resources"].items():
        if name not in changed and resource != TEMPLATE_DOC["Resources"].get(name):
            problems.append(f"{name}: differs with EnableTracing true (only the task definitions and task roles may)")
    return problems


def readme_snippets():
    """The JSON blocks of the README's Tracing section: the collector, the app's additions."""
    text = README.read_text()
    section = text[text.index("\n## Tracing\n"):]
    section = section[:section.index("\n## ", 1)]
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", section, re.S)]


def snippet_problems():
    """The README's snippets added to each JSON task definition: the ECS API model, the template."""
    problems = []
    blocks = readme_snippets()
    if len(blocks) != 2:
        return [f"{README.name}, Tracing: {len(blocks)} JSON blocks, expected 2 (the collector, the app's additions)"]
    collector_snippet, additions = blocks
    shape = botocore.session.get_session().get_service_model("ecs").operation_model("RegisterTaskDefinition").input_shape
    image = TEMPLATE_RAW["Parameters"][IMAGE_PARAMETER]["Default"]
    for app in TASK_ROLES:
        where = f"{README.name} Tracing snippets in {TASK_DEFS[app].name}"
        doc = copy.deepcopy(TASK_JSON[app])
        main = doc["containerDefinitions"][0]
        for key, value in additions.items():
            main[key] = main.get(key, []) + value if key == "environment" else value
        collector = copy.deepcopy(collector_snippet)
        collector["logConfiguration"]["options"]["awslogs-group"] = main["logConfiguration"]["options"]["awslogs-group"]
        doc["containerDefinitions"].append(collector)
        report = ParamValidator().validate(doc, shape)
        if report.has_errors():
            problems += [f"{where}: {line}" for line in report.generate_report().splitlines()]
        problems += [f"{where}: {p}" for p in enum_problems(doc, shape, "")]
        _, containers = task_definition(TRACING_DOC, app)
        t_collector, t_main = containers.get(COLLECTOR, {}), containers[app]
        t_options = t_collector.get("LogConfiguration", {}).get("Options", {})
        pairs = [("collector name", collector.get("name"), COLLECTOR), ("collector image", collector.get("image"), image),
                 ("collector command", collector.get("command"), t_collector.get("Command")),
                 ("collector essential", collector.get("essential"), t_collector.get("Essential")),
                 ("collector cpu", collector.get("cpu"), t_collector.get("Cpu")),
                 ("collector memory", collector.get("memory"), t_collector.get("Memory")),
                 ("collector restartPolicy.enabled", collector.get("restartPolicy", {}).get("enabled"),
                  t_collector.get("RestartPolicy", {}).get("Enabled")),
                 ("collector stream prefix", collector["logConfiguration"]["options"].get("awslogs-stream-prefix"),
                  t_options.get("awslogs-stream-prefix")),
                 ("app cpu", main.get("cpu"), t_main.get("Cpu")),
                 ("app dependsOn", [(d["containerName"], d["condition"]) for d in main.get("dependsOn", [])],
                  [(d["ContainerName"], d["Condition"]) for d in t_main.get("DependsOn", [])]),
                 ("app endpoint", env_map(main["environment"]).get("OTEL_EXPORTER_OTLP_ENDPOINT"),
                  env_map(t_main["Environment"], "Name", "Value").get("OTEL_EXPORTER_OTLP_ENDPOINT"))]
        for what, snippet, template in pairs:
            if snippet != template:
                problems.append(f"{where}: {what} is {snippet!r}, {template!r} in the template with EnableTracing true")
    return problems


def tracing_is_off_by_default_and_enable_tracing_adds_a_non_essential_collector():
    return parameter_problems() + off_problems() + on_problems() + snippet_problems()
