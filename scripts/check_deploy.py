"""Offline checks of docker/ and deploy/ that need Python; run by scripts/check-deploy.sh.

  check_deploy.py HELP_DIR

HELP_DIR holds the binaries' help texts (ingest.txt, worker-run.txt, worker-migrate.txt,
worker-redrive.txt, worker-healthcheck.txt); the `[env: NAME]` lines in them are the
settings the binaries accept. Each check prints `ok   NAME` or `FAIL NAME` with its reasons;
the exit status is the number of failed checks (0: all passed).

Checks: the ECS task definitions against botocore's RegisterTaskDefinition input model
(ParamValidator, plus enums), their env names (exactly what the binaries accept, every
setting set, secrets from Secrets Manager), timings, health checks, labels and logs; the
CloudFormation template's container definitions against the JSON ones, its task-cap table
and Rules, security groups, IAM and target group; compose.yaml's structure and env names;
the Dockerfile and .dockerignore against the workspace; metric names in alerts and dashboard.
"""
import json
import re
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import botocore.session
import yaml
from botocore.validate import ParamValidator
from cfnlint.decode import cfn_yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DOCKER = ROOT / "docker"
TASK_DEFS = {"ingest": DEPLOY / "ecs/ingest-task-definition.json",
             "worker": DEPLOY / "ecs/worker-task-definition.json"}
TEMPLATE = DEPLOY / "cloudformation.yaml"
COMPOSE = DOCKER / "compose.yaml"
IMAGE_SOURCES = "/etc/scalable-webhook/sources.toml"  # where the Dockerfile puts deploy/sources.toml

# The product contract's settings (SPEC.md, "Configuration"); AWS_ENDPOINT_URL is LocalStack's.
SPEC_SETTINGS = {
    "ingest": {"QUEUE_URL", "LISTEN_ADDR", "METRICS_ADDR", "MAX_BODY_BYTES", "LOG_FORMAT", "AWS_REGION"},
    "worker": {"QUEUE_URL", "DLQ_URL", "DATABASE_URL", "WORKER_CONCURRENCY", "DATABASE_MAX_CONNECTIONS",
               "METRICS_ADDR", "LOG_FORMAT", "AWS_REGION"},
}
# Settings a task definition may leave unset (deploy/README.md says when to set them).
OPTIONAL_UNSET = {"ingest": {"FIFO_GROUP_HEADER"}, "worker": {"RECEIVE_LOOPS", "MAX_MESSAGES_PER_SECOND"}}
CREDENTIALS = {"DATABASE_URL"}  # never in `environment`
STOP_MARGIN = 5  # seconds stopTimeout must exceed the drain by
FARGATE_SIZES = {256: range(512, 2049, 512), 512: range(1024, 4097, 1024), 1024: range(2048, 8193, 1024),
                 2048: range(4096, 16385, 1024), 4096: range(8192, 30721, 1024),
                 8192: range(16384, 61441, 4096), 16384: range(32768, 122881, 8192)}

results = []
HELP = {}  # env names accepted per binary (and worker subcommand), from --help; set by main()


def check(fn):
    """Runs one check; it returns a list of problems (empty: passed)."""
    try:
        problems = fn()
    except Exception as error:  # a crash of a check is its failure, with the reason
        problems = [f"{type(error).__name__}: {error}"]
    results.append((fn.__name__, problems))
    print(("ok   " if not problems else "FAIL ") + fn.__name__.replace("_", " "), flush=True)
    for problem in problems:
        print(f"       {problem}", flush=True)


# ---------------------------------------------------------------- inputs

def env_names(help_text):
    return set(re.findall(r"\[env: ([A-Z][A-Z0-9_]*)[=\]]", help_text))


def load_help(help_dir):
    texts = {p.stem: p.read_text() for p in Path(help_dir).glob("*.txt")}
    names = {k: env_names(v) for k, v in texts.items()}
    for key in ("ingest", "worker-run", "worker-migrate", "worker-redrive", "worker-healthcheck"):
        if not names.get(key):
            raise SystemExit(f"check_deploy.py: no [env: ...] lines in {help_dir}/{key}.txt")
    worker_all = names["worker-run"] | names["worker-migrate"] | names["worker-redrive"] | names["worker-healthcheck"]
    return {"ingest": names["ingest"], "worker": worker_all, "worker run": names["worker-run"],
            "worker migrate": names["worker-migrate"], "worker redrive": names["worker-redrive"]}


def secret_envs(path):
    data = tomllib.loads(Path(path).read_text())
    return {name for source in data.get("sources", {}).values() for name in source.get("secret_env", [])}


def extra_allowed(name):
    return name.startswith("AWS_") or name == "RUST_LOG"


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


def readme_metrics():
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Metrics", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)`", section, re.M))


def source_metrics():
    found = set()
    for crate in ("shared", "ingest", "worker"):
        for path in (ROOT / crate / "src").rglob("*.rs"):
            found |= set(re.findall(r'"(webhook_[a-z_]+)"', path.read_text()))
    return found


TEMPLATE_DOC = cfn_yaml.load(str(TEMPLATE))
RESOURCES = TEMPLATE_DOC["Resources"]
TASK_JSON = {name: json.loads(path.read_text()) for name, path in TASK_DEFS.items()}
COMPOSE_DOC = yaml.safe_load(COMPOSE.read_text())


def template_container(name):
    for resource in RESOURCES.values():
        if resource["Type"] == "AWS::ECS::TaskDefinition":
            for container in resource["Properties"]["ContainerDefinitions"]:
                if container["Name"] == name:
                    return resource["Properties"], container
    raise KeyError(f"no container {name!r} in {TEMPLATE.name}")


def json_container(name):
    return TASK_JSON[name]["containerDefinitions"][0]


def env_map(items, key="name", value="value"):
    return {item[key]: item[value] for item in items}


# ---------------------------------------------------------------- ECS task definitions

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
        for var in sorted((wanted_run | SPEC_SETTINGS[name]) - OPTIONAL_UNSET[name] - set(env) - set(secrets)):
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


def drain_times(name, env):
    grace = int(env.get("SHUTDOWN_GRACE_SECONDS", 25))
    return grace + (int(env.get("DEREGISTRATION_DELAY_SECONDS", 0)) if name == "ingest" else 0)


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


# ---------------------------------------------------------------- CloudFormation

def template_task_definitions_equal_the_json_ones():
    problems = []
    for name, doc in TASK_JSON.items():
        props, tc = template_container(name)
        jc = json_container(name)
        where = f"{TEMPLATE.name} {name}"
        t_env, j_env = env_map(tc["Environment"], "Name", "Value"), env_map(jc["environment"])
        if set(t_env) != set(j_env):
            problems.append(f"{where}: environment names differ from the JSON: only in template "
                            f"{sorted(set(t_env) - set(j_env))}, only in JSON {sorted(set(j_env) - set(t_env))}")
        for var in sorted(set(t_env) & set(j_env)):
            t, j = t_env[var], j_env[var]
            if isinstance(t, str) and "${" not in j and str(t) != str(j):
                problems.append(f"{where}: {var} is {t!r} in the template, {j!r} in the JSON")
        if {s["Name"] for s in tc.get("Secrets", [])} != {s["name"] for s in jc.get("secrets", [])}:
            problems.append(f"{where}: secrets differ from the JSON")
        pairs = [("Cpu", doc["cpu"], props.get("Cpu")), ("Memory", doc["memory"], props.get("Memory")),
                 ("StopTimeout", jc.get("stopTimeout"), tc.get("StopTimeout")),
                 ("Command", jc.get("command"), tc.get("Command")),
                 ("HealthCheck.Command", jc["healthCheck"]["command"], tc["HealthCheck"]["Command"]),
                 ("DockerLabels", jc.get("dockerLabels"), tc.get("DockerLabels")),
                 ("ports", sorted(m["containerPort"] for m in jc["portMappings"]),
                  sorted(m["ContainerPort"] for m in tc["PortMappings"]))]
        for what, j, t in pairs:
            if j != t:
                problems.append(f"{where}: {what} is {t!r} in the template, {j!r} in the JSON")
    return problems


def allowed_values(parameter):
    return [int(v) for v in TEMPLATE_DOC["Parameters"][parameter]["AllowedValues"]]


def template_worker_task_cap_keeps_the_connection_budget():
    problems = []
    conns, budgets = allowed_values("WorkerDatabaseMaxConnections"), allowed_values("DatabaseConnectionBudget")
    table = TEMPLATE_DOC["Mappings"]["WorkerMaxTasks"]
    refused = set()
    for rule_name, rule in TEMPLATE_DOC.get("Rules", {}).items():
        c = int(rule["RuleCondition"]["Fn::Equals"][1])
        for assertion in rule["Assertions"]:
            listed = assertion["Assert"]["Fn::Not"][0]["Fn::Contains"][0]
            refused |= {(c, int(b)) for b in listed}
    for c in conns:
        for b in budgets:
            cap = table.get(str(c), {}).get(str(b))
            want = max(b // c - 1, 0)
            if cap != want:
                problems.append(f"WorkerMaxTasks[{c}][{b}] is {cap}, should be floor({b}/{c}) - 1 = {want}")
            if (want < 1) != ((c, b) in refused):
                problems.append(f"Rules: budget {b} with {c} connections per task should be "
                                f"{'refused' if want < 1 else 'accepted'}")
            elif cap and (cap + 1) * c > b:
                problems.append(f"({cap} + 1) tasks x {c} connections exceed the budget {b}")
    target = RESOURCES["WorkerScalableTarget"]["Properties"]
    if target["MaxCapacity"] != {"Fn::FindInMap": ["WorkerMaxTasks", {"Ref": "WorkerDatabaseMaxConnections"},
                                                   {"Ref": "DatabaseConnectionBudget"}]}:
        problems.append("WorkerScalableTarget.MaxCapacity must come from the WorkerMaxTasks table")
    _, worker = template_container("worker")
    if env_map(worker["Environment"], "Name", "Value").get("DATABASE_MAX_CONNECTIONS") != {"Ref": "WorkerDatabaseMaxConnections"}:
        problems.append("the worker's DATABASE_MAX_CONNECTIONS must be the WorkerDatabaseMaxConnections parameter")
    deployment = RESOURCES["WorkerService"]["Properties"].get("DeploymentConfiguration", {})
    if deployment.get("MaximumPercent", 200) > 100:
        problems.append("WorkerService deployments may run more tasks than the cap: set MaximumPercent <= 100")
    return problems


def template_scales_the_worker_on_backlog_per_task():
    problems = []
    spec = RESOURCES["WorkerBacklogPolicy"]["Properties"]["TargetTrackingScalingPolicyConfiguration"]
    metrics = spec["CustomizedMetricSpecification"]["Metrics"]
    names = {m["Id"]: m["MetricStat"]["Metric"]["MetricName"] for m in metrics if "MetricStat" in m}
    expression = [m for m in metrics if m.get("ReturnData")]
    want = {"ApproximateNumberOfMessagesVisible", "RunningTaskCount"}
    if set(names.values()) != want:
        problems.append(f"backlog policy should use {sorted(want)}, uses {sorted(names.values())}")
    elif len(expression) != 1 or re.sub(r"\s", "", expression[0].get("Expression", "")) != \
            "{}/{}".format(*[i for n in ("ApproximateNumberOfMessagesVisible", "RunningTaskCount")
                             for i, m in names.items() if m == n]):
        problems.append("backlog policy should return visible / running tasks")
    settings = RESOURCES["Cluster"]["Properties"].get("ClusterSettings", [])
    if {"Name": "containerInsights", "Value": "enabled"} not in settings:
        problems.append("Container Insights must be enabled on the cluster (RunningTaskCount)")
    ingest = RESOURCES["IngestRequestsPolicy"]["Properties"]["TargetTrackingScalingPolicyConfiguration"]
    if ingest["PredefinedMetricSpecification"]["PredefinedMetricType"] != "ALBRequestCountPerTarget":
        problems.append("ingest should scale on ALBRequestCountPerTarget")
    return problems


def template_load_balancer_drains_like_ingest_and_never_exposes_metrics():
    problems = []
    _, ingest = template_container("ingest")
    env = env_map(ingest["Environment"], "Name", "Value")
    listen, metrics = port_of(env["LISTEN_ADDR"]), port_of(env["METRICS_ADDR"])
    group = RESOURCES["IngestTargetGroup"]["Properties"]
    attributes = {a["Key"]: a["Value"] for a in group.get("TargetGroupAttributes", [])}
    if attributes.get("deregistration_delay.timeout_seconds") != env["DEREGISTRATION_DELAY_SECONDS"]:
        problems.append("target group deregistration_delay.timeout_seconds must equal DEREGISTRATION_DELAY_SECONDS")
    if group.get("HealthCheckPath") != "/readyz" or group.get("Port") != listen:
        problems.append(f"target group must check /readyz on port {listen} (LISTEN_ADDR)")
    balancers = RESOURCES["IngestService"]["Properties"]["LoadBalancers"]
    if [b["ContainerPort"] for b in balancers] != [listen]:
        problems.append(f"ingest service must register container port {listen} only")
    for name, resource in RESOURCES.items():
        rules = []
        if resource["Type"] == "AWS::EC2::SecurityGroup":
            rules = [(name, r) for r in resource["Properties"].get("SecurityGroupIngress", [])]
        elif resource["Type"] == "AWS::EC2::SecurityGroupIngress":
            rules = [(name, resource["Properties"])]
        for owner, rule in rules:
            if isinstance(rule.get("FromPort"), int) and rule["FromPort"] <= metrics <= rule["ToPort"]:
                source = rule.get("SourceSecurityGroupId")
                if source != {"Fn::GetAtt": ["MetricsScraperSecurityGroup", "GroupId"]}:
                    problems.append(f"{owner}: port {metrics} (metrics) open to something else than the scraper group")
    egress = RESOURCES["AlbToIngestEgress"]["Properties"]
    if (egress["FromPort"], egress["ToPort"]) != (listen, listen):
        problems.append(f"the ALB may reach ingest on port {listen} only")
    alb_egress = RESOURCES["AlbSecurityGroup"]["Properties"].get("SecurityGroupEgress")
    if not alb_egress or any(rule.get("CidrIp") != "127.0.0.1/32" for rule in alb_egress):
        problems.append("AlbSecurityGroup must replace the default allow-all egress (a 127.0.0.1/32 rule): "
                        "the ALB may reach ingest's LISTEN_ADDR only")
    return problems


def statements(role):
    return [s for policy in role["Properties"].get("Policies", [])
            for s in policy["PolicyDocument"]["Statement"] if isinstance(s, dict) and "Effect" in s]


def template_roles_are_least_privilege():
    problems = []
    main, dlq = {"Fn::GetAtt": ["MainQueue", "Arn"]}, {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    allowed = {
        "IngestTaskRole": {"MainQueue": {"sqs:SendMessage", "sqs:GetQueueAttributes"}},
        "WorkerTaskRole": {"MainQueue": {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
                                         "sqs:GetQueueAttributes", "sqs:GetQueueUrl"},
                           "DeadLetterQueue": {"sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"}},
        "RedriveTaskRole": {"DeadLetterQueue": {"sqs:StartMessageMoveTask", "sqs:ListMessageMoveTasks",
                                                "sqs:CancelMessageMoveTask", "sqs:ReceiveMessage", "sqs:DeleteMessage",
                                                "sqs:GetQueueAttributes", "sqs:GetQueueUrl"},
                            "MainQueue": {"sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"}},
    }
    for role, grants in allowed.items():
        granted = {}
        for statement in statements(RESOURCES[role]):
            queue = {json.dumps(main): "MainQueue", json.dumps(dlq): "DeadLetterQueue"}.get(json.dumps(statement["Resource"]))
            if queue is None:
                problems.append(f"{role}: a statement on {statement['Resource']!r}, not on one of the queues")
                continue
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            granted.setdefault(queue, set()).update(actions)
        if granted != grants:
            problems.append(f"{role}: grants {({k: sorted(v) for k, v in granted.items()})}, "
                            f"expected {({k: sorted(v) for k, v in grants.items()})}")
    for name, resource in RESOURCES.items():
        if resource["Type"] == "AWS::IAM::Role":
            for statement in statements(resource):
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                if any("*" in a for a in actions) or statement.get("Resource") == "*":
                    problems.append(f"{name}: wildcard in {statement}")
        if resource["Type"] == "AWS::Logs::LogGroup" and "RetentionInDays" not in resource["Properties"]:
            problems.append(f"{name}: no RetentionInDays")
    queue = RESOURCES["MainQueue"]["Properties"]
    if queue.get("RedrivePolicy", {}).get("deadLetterTargetArn") != dlq:
        problems.append("MainQueue needs a RedrivePolicy to DeadLetterQueue")
    return problems


# ---------------------------------------------------------------- compose

def compose_depends(service):
    deps = COMPOSE_DOC["services"][service].get("depends_on", {})
    return {d: "service_started" for d in deps} if isinstance(deps, list) else {
        d: spec.get("condition", "service_started") for d, spec in deps.items()}


def compose_structure_health_and_start_order():
    problems = []
    services = COMPOSE_DOC["services"]
    for name in ("localstack", "postgres", "migrate", "worker", "ingest", "prometheus"):
        if name not in services:
            problems.append(f"service {name} is missing")
    if problems:
        return problems
    wanted = {"migrate": {"postgres": "service_healthy"},
              "worker": {"migrate": "service_completed_successfully", "localstack": "service_healthy"},
              "ingest": {"localstack": "service_healthy"},
              "prometheus": {"ingest": "service_healthy", "worker": "service_healthy"}}
    for service, deps in wanted.items():
        have = compose_depends(service)
        for dep, condition in deps.items():
            if have.get(dep) != condition:
                problems.append(f"{service} should depend on {dep} with condition {condition} (has {have.get(dep)})")
    for name, service in services.items():
        test = service.get("healthcheck", {}).get("test")
        if name == "migrate":
            continue
        if not test:
            problems.append(f"{name}: no healthcheck (depends_on conditions need one)")
    for name in ("ingest", "worker"):
        if services[name]["healthcheck"]["test"] != ["CMD", name, "healthcheck"]:
            problems.append(f"{name}: healthcheck should be [CMD, {name}, healthcheck] (the image has no curl)")
    if services["migrate"].get("command") != ["worker", "migrate"] or services["migrate"].get("restart") != "no":
        problems.append("migrate: should run [worker, migrate] once (restart: \"no\")")
    if "observability" not in services["prometheus"].get("profiles", []):
        problems.append("prometheus should be in the optional profile `observability`")
    localstack = services["localstack"]
    if not re.fullmatch(r"localstack/localstack:4\.13\.\d+", localstack.get("image", "")):
        problems.append("localstack: image should be pinned to localstack/localstack:4.13.x")
    ls_env = localstack.get("environment", {})
    if "sqs" not in str(ls_env.get("SERVICES", "")).split(",") or ls_env.get("SQS_ENDPOINT_STRATEGY") != "path":
        problems.append("localstack: needs SERVICES=sqs and SQS_ENDPOINT_STRATEGY=path")
    hooks = [v for v in localstack.get("volumes", []) if ":/etc/localstack/init/ready.d/" in v]
    if not hooks:
        problems.append("localstack: no init hook mounted into /etc/localstack/init/ready.d/")
    hook_text = "".join((DOCKER / h.split(":")[0]).read_text() for h in hooks if (DOCKER / h.split(":")[0]).is_file())
    for service in ("ingest", "worker"):
        url = urlparse(services[service]["environment"]["QUEUE_URL"])
        queue = url.path.rsplit("/", 1)[-1]
        if url.netloc != ls_env.get("LOCALSTACK_HOST") or not url.path.startswith("/queue/us-east-1/000000000000/"):
            problems.append(f"{service}: QUEUE_URL should be http://<LOCALSTACK_HOST>/queue/us-east-1/000000000000/NAME")
        if f'"QUEUE_NAME", "{queue}"' not in hook_text:
            problems.append(f"{service}: queue {queue!r} is not the one the init hook creates")
    dlq = services["worker"]["environment"].get("DLQ_URL", "")
    if dlq and not dlq.endswith(services["worker"]["environment"]["QUEUE_URL"].rsplit("/", 1)[-1] + "-dlq"):
        problems.append("worker: DLQ_URL should name the queue's -dlq")
    return problems


def compose_files_exist_and_env_names_are_settings():
    problems = []
    services = COMPOSE_DOC["services"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith(".") and not (DOCKER / source).exists():
                problems.append(f"{name}: mounted file {source} does not exist")
        build = service.get("build")
        if build and not (DOCKER / build["context"] / build["dockerfile"]).is_file():
            problems.append(f"{name}: build file {build['dockerfile']} not found in context {build['context']}")
        command = service.get("command") or []
        if not command or command[0] not in ("ingest", "worker"):
            continue
        key = "ingest" if command[0] == "ingest" else f"worker {command[1] if len(command) > 1 else 'run'}"
        env = service.get("environment", {})
        accepted = set(HELP[key])
        sources = env.get("SOURCES_FILE")
        if sources:
            mounts = {v.split(":")[1]: v.split(":")[0] for v in service.get("volumes", [])}
            if sources not in mounts:
                problems.append(f"{name}: SOURCES_FILE {sources} is not mounted")
            else:
                needed = secret_envs(DOCKER / mounts[sources])
                accepted |= needed
                for var in sorted(needed - set(env)):
                    problems.append(f"{name}: {var} (secret_env of {mounts[sources]}) is not set: ingest would not start")
        for var in sorted(env):
            if var not in accepted and not extra_allowed(var):
                problems.append(f"{name}: {var} is not a setting of `{key}` (not in its --help)")
        stop = int(str(service.get("stop_grace_period", "10s")).rstrip("s"))
        if command[1:2] != ["migrate"] and stop < drain_times(command[0], env) + STOP_MARGIN:
            problems.append(f"{name}: stop_grace_period {stop}s is shorter than its drain + {STOP_MARGIN} s")
    prometheus = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    targets = {t for job in prometheus["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]}
    for service in ("ingest", "worker"):
        want = f"{service}:{port_of(services[service]['environment']['METRICS_ADDR'])}"
        if want not in targets:
            problems.append(f"docker/prometheus.yml does not scrape {want}")
    return problems


# ---------------------------------------------------------------- image and observability

def dockerfile_and_dockerignore_cover_the_workspace():
    problems = []
    text = (DOCKER / "Dockerfile").read_text()
    members = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["members"]
    ignore = (ROOT / ".dockerignore").read_text().split()
    for member in members:
        if f"!{member}/" not in ignore:
            problems.append(f".dockerignore does not let workspace member {member}/ into the build context")
        if not re.search(rf"^COPY {re.escape(member)} {re.escape(member)}$", text, re.M):
            problems.append(f"Dockerfile does not COPY workspace member {member} into the builder")
    for path in ("Cargo.toml", "Cargo.lock", "deploy/sources.toml"):
        if f"!{path}" not in ignore:
            problems.append(f".dockerignore does not let {path} into the build context")
    if f"COPY deploy/sources.toml {IMAGE_SOURCES}" not in text:
        problems.append(f"Dockerfile should copy deploy/sources.toml to {IMAGE_SOURCES}")
    for image in re.findall(r"^FROM (\S+)", text, re.M):
        if ":" not in image.split("/")[-1] and "@" not in image and not re.search(rf"AS {re.escape(image)}\b", text):
            problems.append(f"FROM {image}: pin a tag")
        if image.endswith(":latest"):
            problems.append(f"FROM {image}: do not use latest")
    final = text.rsplit("\nFROM ", 1)[1]
    user = re.findall(r"^USER (\S+)", final, re.M)
    if not user or user[-1].split(":")[0] in ("root", "0"):
        problems.append("the runtime stage must run as a non-root USER")
    if "--locked" not in text or "-p ingest -p worker" not in text:
        problems.append("build with --locked -p ingest -p worker")
    return problems


def metric_names_in_alerts_and_dashboard_exist():
    problems = []
    documented, emitted = readme_metrics(), source_metrics()
    files = [DEPLOY / "observability/alerts.yml", DEPLOY / "observability/grafana-dashboard.json"]
    for path in files:
        for metric in sorted(set(re.findall(r"\b(webhook_[a-z_]+)", path.read_text()))):
            base = re.sub(r"_(bucket|sum|count)$", "", metric)
            if base not in documented:
                problems.append(f"{path.name}: {metric} is not in the README's metrics table")
            if base not in emitted:
                problems.append(f"{path.name}: {metric} is not emitted by the code (no \"{base}\" in the sources)")
    dashboard = json.loads(files[1].read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    if len(ids) != len(set(ids)):
        problems.append("grafana-dashboard.json: panel ids are not unique")
    for panel in dashboard["panels"]:
        if panel["type"] != "row" and not all(t.get("expr") for t in panel.get("targets", [])):
            problems.append(f"grafana-dashboard.json: panel {panel['title']!r} has a target without expr")
    return problems


def main():
    global HELP
    HELP = load_help(sys.argv[1])
    for fn in (task_definitions_match_the_ecs_api_model,
               task_definitions_set_exactly_the_settings_the_binaries_accept,
               task_definitions_have_fargate_shape_timings_health_logs_and_labels,
               task_definition_placeholders_are_stack_outputs,
               template_task_definitions_equal_the_json_ones,
               template_worker_task_cap_keeps_the_connection_budget,
               template_scales_the_worker_on_backlog_per_task,
               template_load_balancer_drains_like_ingest_and_never_exposes_metrics,
               template_roles_are_least_privilege,
               compose_structure_health_and_start_order,
               compose_files_exist_and_env_names_are_settings,
               dockerfile_and_dockerignore_cover_the_workspace,
               metric_names_in_alerts_and_dashboard_exist):
        check(fn)
    return sum(1 for _, problems in results if problems)


if __name__ == "__main__":
    sys.exit(main())
