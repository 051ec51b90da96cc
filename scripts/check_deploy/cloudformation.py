"""Checks of the CloudFormation template (deploy/cloudformation.yaml): its container
definitions equal the JSON task definitions; the worker's task-cap table (WorkerMaxTasks) and
Rules fit the database connection budget (which the tasks share through their lease table); the worker scales on backlog per task; the load
balancer drains like ingest and the metrics port is open to the scraper group only; IAM roles
are least privilege, log groups have a retention and the main queue has a redrive policy; the
large-payload bucket is private, encrypted, TLS-only, expires objects after every queue
retention plus a margin, and is LARGE_PAYLOAD_BUCKET of both services; `worker maintain` runs on
the MaintenanceSchedule as the one-off tasks do (the worker task definition and container, their
network, settings the worker accepts, the MaintainCommand output alike) through an events role
that may only run the worker family in the cluster and pass its two roles; with an ExportBucket
it gets EXPORT_BUCKET (and EXPORT_PREFIX) and the worker's task role the export's S3 rights,
without one neither.
"""
import json
import re

from .common import RESOURCES, TASK_JSON, TEMPLATE, TEMPLATE_DOC, env_map, json_container, port_of


def template_container(name):
    for resource in RESOURCES.values():
        if resource["Type"] == "AWS::ECS::TaskDefinition":
            for container in resource["Properties"]["ContainerDefinitions"]:
                if container["Name"] == name:
                    return resource["Properties"], container
    raise KeyError(f"no container {name!r} in {TEMPLATE.name}")


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
            # The tasks share the budget less the registration connection (one connection for a joining task);
            # the cap is the most tasks that each get their whole pool.
            want = max((b - 1) // c, 0)
            if cap != want:
                problems.append(f"WorkerMaxTasks[{c}][{b}] is {cap}, should be floor(({b} - 1)/{c}) = {want}")
            if (want < 1) != ((c, b) in refused):
                problems.append(f"Rules: budget {b} with {c} connections per task should be "
                                f"{'refused' if want < 1 else 'accepted'}")
            elif cap and cap * c > b - 1:
                problems.append(f"{cap} tasks x {c} connections exceed the budget {b} less the registration connection")
    target = RESOURCES["WorkerScalableTarget"]["Properties"]
    if target["MaxCapacity"] != {"Fn::FindInMap": ["WorkerMaxTasks", {"Ref": "WorkerDatabaseMaxConnections"},
                                                   {"Ref": "DatabaseConnectionBudget"}]}:
        problems.append("WorkerScalableTarget.MaxCapacity must come from the WorkerMaxTasks table")
    _, worker = template_container("worker")
    worker_env = env_map(worker["Environment"], "Name", "Value")
    if worker_env.get("DATABASE_MAX_CONNECTIONS") != {"Ref": "WorkerDatabaseMaxConnections"}:
        problems.append("the worker's DATABASE_MAX_CONNECTIONS must be the WorkerDatabaseMaxConnections parameter")
    if worker_env.get("DATABASE_CONNECTION_BUDGET") != {"Ref": "DatabaseConnectionBudget"}:
        problems.append("the worker's DATABASE_CONNECTION_BUDGET must be the DatabaseConnectionBudget parameter")
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
    balancer = next(r for r in RESOURCES.values()
                    if r["Type"] == "AWS::ElasticLoadBalancingV2::LoadBalancer")
    alb_attributes = {a["Key"]: a["Value"] for a in balancer["Properties"].get("LoadBalancerAttributes", [])}
    alb_idle = int(alb_attributes.get("idle_timeout.timeout_seconds", "60"))
    if int(env.get("IDLE_TIMEOUT_SECONDS", "0")) <= alb_idle:
        problems.append(f"ingest's IDLE_TIMEOUT_SECONDS must exceed the ALB's idle timeout ({alb_idle} s), "
                        "or the ALB reuses connections ingest has closed (502)")
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


# `worker maintain` exports to ExportBucket (when set) under the worker's task role: the
# multipart upload (PutObject, AbortMultipartUpload), HeadObject (GetObject) of what it wrote,
# ListBucket for HeadBucket at start (and 404 for a missing key).
EXPORT_OBJECTS = {"Fn::Sub": "arn:${AWS::Partition}:s3:::${ExportBucket}/${ExportPrefix}webhook_events/*"}
EXPORT_BUCKET_ARN = {"Fn::Sub": "arn:${AWS::Partition}:s3:::${ExportBucket}"}
EXPORT_GRANTS = {"ExportBucket/{prefix}webhook_events/*": {"s3:PutObject", "s3:AbortMultipartUpload", "s3:GetObject"},
                 "ExportBucket": {"s3:ListBucket"}}


def with_export(doc, bucket, prefix=""):
    """`doc` as deployed with ExportBucket `bucket` and ExportPrefix `prefix` (their conditions)."""
    from .common import resolve
    return resolve(doc, {"HasExportBucket": bucket != "", "HasExportPrefix": prefix != ""})


def template_roles_are_least_privilege():
    problems = []
    for export in (False, True):
        problems += [f"{p} (ExportBucket {'set' if export else 'empty'})"
                     for p in roles_are_least_privilege(with_export(RESOURCES, "archive" if export else ""), export)]
    return problems


def roles_are_least_privilege(resources_doc, export):
    problems = []
    main, dlq = {"Fn::GetAtt": ["MainQueue", "Arn"]}, {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    bucket, objects = {"Fn::GetAtt": ["PayloadBucket", "Arn"]}, {"Fn::Sub": "${PayloadBucket.Arn}/*"}
    resources = {json.dumps(main): "MainQueue", json.dumps(dlq): "DeadLetterQueue",
                 json.dumps(bucket): "PayloadBucket", json.dumps(objects): "PayloadBucket/*",
                 json.dumps(EXPORT_OBJECTS): "ExportBucket/{prefix}webhook_events/*",
                 json.dumps(EXPORT_BUCKET_ARN): "ExportBucket"}
    # ingest only writes payloads (PutObject is every multipart call but the abort); the worker
    # reads and deletes them, and copies one onto itself (GetObject + PutObject) before its pointer
    # goes to the DLQ, so the object outlives the pointer. ListBucket: HeadBucket at start, and
    # 404 (not 403) for a missing object. Redrive's scan changes the visibility of what it
    # keeps in the DLQ (gives it back).
    allowed = {
        "IngestTaskRole": {"MainQueue": {"sqs:SendMessage", "sqs:GetQueueAttributes"},
                           "PayloadBucket/*": {"s3:PutObject", "s3:AbortMultipartUpload"},
                           "PayloadBucket": {"s3:ListBucket"}},
        "WorkerTaskRole": {"MainQueue": {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
                                         "sqs:GetQueueAttributes", "sqs:GetQueueUrl"},
                           "DeadLetterQueue": {"sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"},
                           "PayloadBucket/*": {"s3:GetObject", "s3:DeleteObject", "s3:PutObject"},
                           "PayloadBucket": {"s3:ListBucket"}},
        "RedriveTaskRole": {"DeadLetterQueue": {"sqs:StartMessageMoveTask", "sqs:ListMessageMoveTasks",
                                                "sqs:CancelMessageMoveTask", "sqs:ReceiveMessage", "sqs:DeleteMessage",
                                                "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes",
                                                "sqs:GetQueueUrl"},
                            "MainQueue": {"sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"}},
    }
    if export:
        allowed["WorkerTaskRole"].update(EXPORT_GRANTS)
    for role, grants in allowed.items():
        granted = {}
        for statement in statements(resources_doc[role]):
            queue = resources.get(json.dumps(statement["Resource"]))
            if queue is None:
                problems.append(f"{role}: a statement on {statement['Resource']!r}, not on a queue, the payload bucket or the export prefix")
                continue
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            granted.setdefault(queue, set()).update(actions)
        if granted != grants:
            problems.append(f"{role}: grants {({k: sorted(v) for k, v in granted.items()})}, "
                            f"expected {({k: sorted(v) for k, v in grants.items()})}")
    for name, resource in resources_doc.items():
        if resource["Type"] == "AWS::IAM::Role":
            for statement in statements(resource):
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                if any("*" in a for a in actions) or statement.get("Resource") == "*":
                    problems.append(f"{name}: wildcard in {statement}")
        if resource["Type"] == "AWS::Logs::LogGroup" and "RetentionInDays" not in resource["Properties"]:
            problems.append(f"{name}: no RetentionInDays")
            unresolved = [s for p in resource["Properties"].get("Policies", []) for s in p.get("PolicyDocument", {})
                          .get("Statement", [p]) if not (isinstance(s, dict) and "Effect" in s)]
            if unresolved:
                problems.append(f"{name}: statements or policies under a condition this check does not know: {unresolved}")
    queue = resources_doc["MainQueue"]["Properties"]
    if queue.get("RedrivePolicy", {}).get("deadLetterTargetArn") != dlq:
        problems.append("MainQueue needs a RedrivePolicy to DeadLetterQueue")
    return problems


# The DLQ keeps a message 14 days from its first enqueue; a redrive gives it the main queue's
# retention again; the margin lets a late redrive still find its object.
PAYLOAD_EXPIRY_MARGIN_DAYS = 1


def template_payload_bucket_is_private_encrypted_and_outlives_the_queues():
    problems = []
    bucket = RESOURCES.get("PayloadBucket")
    if not bucket or bucket["Type"] != "AWS::S3::Bucket":
        return ["no AWS::S3::Bucket PayloadBucket"]
    props = bucket["Properties"]
    if bucket.get("DeletionPolicy") != "Retain":
        problems.append("PayloadBucket: DeletionPolicy Retain (it may hold undelivered webhooks, like the queues)")
    rules = props.get("BucketEncryption", {}).get("ServerSideEncryptionConfiguration", [])
    if not rules or rules[0]["ServerSideEncryptionByDefault"]["SSEAlgorithm"] not in ("AES256", "aws:kms"):
        problems.append("PayloadBucket: default encryption (AES256 or aws:kms) missing")
    block = props.get("PublicAccessBlockConfiguration", {})
    for flag in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"):
        if block.get(flag) is not True:
            problems.append(f"PayloadBucket: PublicAccessBlockConfiguration.{flag} must be true")
    if props.get("OwnershipControls") != {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}:
        problems.append("PayloadBucket: OwnershipControls BucketOwnerEnforced (no ACLs)")
    lifecycle = [r for r in props.get("LifecycleConfiguration", {}).get("Rules", []) if r.get("Status") == "Enabled"]
    main_max = int(TEMPLATE_DOC["Parameters"]["MessageRetentionSeconds"]["MaxValue"])
    dlq_retention = int(RESOURCES["DeadLetterQueue"]["Properties"]["MessageRetentionPeriod"])
    want_days = -(-(main_max + dlq_retention) // 86400) + PAYLOAD_EXPIRY_MARGIN_DAYS
    expiry = [r for r in lifecycle if "ExpirationInDays" in r and not r.get("Prefix") and not r.get("TagFilters")]
    if not expiry or int(expiry[0]["ExpirationInDays"]) < want_days:
        problems.append(f"PayloadBucket: an Enabled rule for every object with ExpirationInDays >= {want_days} "
                        f"(DLQ {dlq_retention} s + MessageRetentionSeconds up to {main_max} s + "
                        f"{PAYLOAD_EXPIRY_MARGIN_DAYS} day)")
    if not any(r.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation") == 1 for r in lifecycle):
        problems.append("PayloadBucket: abort incomplete multipart uploads after 1 day")
    policies = [r["Properties"] for r in RESOURCES.values()
                if r["Type"] == "AWS::S3::BucketPolicy" and r["Properties"].get("Bucket") == {"Ref": "PayloadBucket"}]
    tls = [s for p in policies for s in p["PolicyDocument"]["Statement"]
           if s.get("Effect") == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}]
    if not tls:
        problems.append("PayloadBucket: no bucket policy denying requests without TLS (aws:SecureTransport false)")
    for name in ("ingest", "worker"):
        _, container = template_container(name)
        env = env_map(container["Environment"], "Name", "Value")
        if env.get("LARGE_PAYLOAD_BUCKET") != {"Ref": "PayloadBucket"}:
            problems.append(f"{name}: LARGE_PAYLOAD_BUCKET must be !Ref PayloadBucket")
    return problems


# `worker maintain` on a schedule (deploy/README.md, "Partitions and retention").
MAINTAIN_COMMAND = ["worker", "maintain"]
PARTITION_INTERVALS = {"day", "week", "month", "1d", "7d", "1w", "1mo", "1mon", "1month"}  # what the worker parses
RETENTION_SAMPLES = {"": True, "90d": True, "36h": True, "1": False, "90": False, "d": False, "0d": False}
# What the worker's parse_bucket_name accepts (3 to 63 of a-z 0-9 . -, a letter or digit at
# both ends), or empty; and key prefixes that stay inside the JSON, the shell quotes and the
# IAM resource (no quote, no `*`, no `$`).
EXPORT_BUCKET_SAMPLES = {"": True, "archive": True, "my.archive-1": True, "ab": False, "Archive": False,
                         "-archive": False, "archive-": False, "a" * 64: False, "arch_ive": False, "arch ive": False}
EXPORT_PREFIX_SAMPLES = {"": True, "archive/": True, "webhooks/prod-1/": True, "a.b_c(1)!/": True, "a*": False,
                         'a"': False, "a'": False, "${aws:username}/": False, "a b/": False}
# (Retention, ExportBucket, ExportPrefix) the rule and MaintainCommand are rendered with.
MAINTAIN_CASES = [(r, "", "") for r in RETENTION_SAMPLES if RETENTION_SAMPLES[r]] + \
    [("90d", "archive", ""), ("90d", "archive", "webhooks/prod/"), ("", "archive", "x/"), ("90d", "", "webhooks/")]


def sub_text(node, values, where):
    """The text of an Fn::Sub (after resolve()) with ${Name} from `values` (parameters, variables
    that are strings or Fn::Sub themselves); ${Resource.Attribute} and pseudo parameters stay."""
    if isinstance(node, str):
        return node
    if not isinstance(node, dict) or "Fn::Sub" not in node:
        raise ValueError(f"{where}: {node!r} is not a string or Fn::Sub")
    body = node["Fn::Sub"]
    text, variables = (body, {}) if isinstance(body, str) else body
    scope = dict(values)
    scope.update({k: v for k, v in variables.items() if isinstance(v, str) or "Fn::Sub" in v})
    return re.sub(r"\$\{([A-Za-z0-9]+)\}", lambda m: sub_text(scope[m.group(1)], values, where)
                  if m.group(1) in scope else m.group(0), text)


def maintain_overrides(node, case, where):
    """The RunTask overrides of an Input or a MaintainCommand output, rendered for a case
    (Retention, ExportBucket, ExportPrefix; HasRetention, HasExportBucket and HasExportPrefix
    follow them) and the other parameters' defaults."""
    from .common import TEMPLATE_RAW, resolve
    retention, bucket, prefix = case
    params = {name: str(p.get("Default", "")) for name, p in TEMPLATE_RAW["Parameters"].items()}
    params.update(Retention=retention, ExportBucket=bucket, ExportPrefix=prefix)
    text = sub_text(with_export(resolve(node, {"HasRetention": retention != ""}), bucket, prefix), params, where)
    if "--overrides" in text:
        text = re.search(r"--overrides '([^']*)'", text).group(1)
    return json.loads(text)


def template_schedules_worker_maintain_like_the_one_off_tasks():
    from .common import HELP, TEMPLATE_RAW, extra_allowed
    problems = []
    params = TEMPLATE_RAW["Parameters"]
    if params.get("MaintenanceSchedule", {}).get("Default") != "rate(1 hour)":
        problems.append("MaintenanceSchedule: a parameter with Default rate(1 hour)")
    interval = params.get("PartitionInterval", {})
    if interval.get("Default") != "day" or not set(interval.get("AllowedValues", [])) <= PARTITION_INTERVALS:
        problems.append(f"PartitionInterval: Default day and AllowedValues within {sorted(PARTITION_INTERVALS)}")
    retention = params.get("Retention", {})
    pattern = retention.get("AllowedPattern", "")
    for sample, ok in RETENTION_SAMPLES.items():
        if bool(re.fullmatch(pattern, sample)) != ok:
            problems.append(f"Retention: AllowedPattern {pattern!r} should {'accept' if ok else 'refuse'} {sample!r}")
    if retention.get("Default") != "90d":
        problems.append("Retention: Default 90d")
    for name, samples in (("ExportBucket", EXPORT_BUCKET_SAMPLES), ("ExportPrefix", EXPORT_PREFIX_SAMPLES)):
        parameter = params.get(name, {})
        pattern = parameter.get("AllowedPattern", "")
        for sample, ok in samples.items():
            if bool(re.fullmatch(pattern, sample)) != ok:
                problems.append(f"{name}: AllowedPattern {pattern!r} should {'accept' if ok else 'refuse'} {sample!r}")
        if parameter.get("Default") != "":
            problems.append(f"{name}: a parameter with Default empty (no export)")
    rules = {n: r for n, r in RESOURCES.items() if r["Type"] == "AWS::Events::Rule"}
    if list(rules) != ["MaintenanceRule"]:
        return problems + [f"one AWS::Events::Rule, MaintenanceRule, expected; found {sorted(rules)}"]
    rule = rules["MaintenanceRule"]["Properties"]
    if rule.get("ScheduleExpression") != {"Ref": "MaintenanceSchedule"} or rule.get("State", "ENABLED") != "ENABLED":
        problems.append("MaintenanceRule: ScheduleExpression !Ref MaintenanceSchedule, State ENABLED")
    if len(rule.get("Targets", [])) != 1:
        return problems + ["MaintenanceRule: one target (the cluster)"]
    target = rule["Targets"][0]
    ecs = target.get("EcsParameters", {})
    worker_def = next(n for n, r in RESOURCES.items() if r["Type"] == "AWS::ECS::TaskDefinition"
                      and any(c["Name"] == "worker" for c in r["Properties"]["ContainerDefinitions"]))
    props, container = template_container("worker")
    if target.get("Arn") != {"Fn::GetAtt": ["Cluster", "Arn"]}:
        problems.append("MaintenanceRule: the target must be the cluster (!GetAtt Cluster.Arn)")
    if ecs.get("TaskDefinitionArn") != {"Ref": worker_def} or ecs.get("LaunchType") != "FARGATE" \
            or ecs.get("TaskCount", 1) != 1:
        problems.append(f"MaintenanceRule: EcsParameters TaskDefinitionArn !Ref {worker_def}, LaunchType FARGATE, one task")
    service = RESOURCES["WorkerService"]["Properties"]["NetworkConfiguration"]["AwsvpcConfiguration"]
    network = ecs.get("NetworkConfiguration", {}).get("AwsVpcConfiguration")
    if network != service:
        problems.append(f"MaintenanceRule: network {network!r} differs from the worker service's {service!r}")
    outputs = TEMPLATE_RAW.get("Outputs", {})
    commands = {n: o["Value"]["Fn::Sub"][0] for n, o in outputs.items() if n.endswith("Command")}
    networks = {n: re.search(r"--network-configuration '[^']*'", c).group(0) for n, c in commands.items()}
    if "MaintainCommand" not in commands:
        problems.append("Outputs: a MaintainCommand beside MigrateCommand and RedriveCommand")
    elif len(set(networks.values())) != 1:
        problems.append(f"Outputs: the *Command outputs' --network-configuration differ: {networks}")
    for case in MAINTAIN_CASES:
        value, bucket, prefix = case
        described = f"Retention {value!r}, ExportBucket {bucket!r}, ExportPrefix {prefix!r}"
        where = f"MaintenanceRule Input with {described}"
        overrides = maintain_overrides(target.get("Input", "{}"), case, where)
        if "MaintainCommand" in outputs:
            command = maintain_overrides(outputs["MaintainCommand"]["Value"], case, "MaintainCommand")
            if command != overrides:
                problems.append(f"MaintainCommand's --overrides differ from the rule's Input ({described})")
        if "taskRoleArn" in overrides:
            problems.append(f"{where}: a taskRoleArn override (the worker's task role has what maintain needs)")
        containers = overrides.get("containerOverrides", [])
        if [c.get("name") for c in containers] != [container["Name"]]:
            problems.append(f"{where}: containerOverrides should name the worker container {container['Name']!r} only")
            continue
        override = containers[0]
        if override.get("command") != MAINTAIN_COMMAND:
            problems.append(f"{where}: command {override.get('command')!r}, not {MAINTAIN_COMMAND!r}")
        names = [e["name"] for e in override.get("environment", [])]
        env = {e["name"]: e["value"] for e in override.get("environment", [])}
        for var in sorted(set(names)):
            if names.count(var) > 1:
                problems.append(f"{where}: {var} is set more than once")
            if var not in HELP["worker maintain"] and not extra_allowed(var):
                problems.append(f"{where}: {var} is not a setting of `worker maintain`")
        want = {"PARTITION_INTERVAL": interval.get("Default"), "DATABASE_MAX_CONNECTIONS": "1"}
        if value:
            want["RETENTION"] = value
        if bucket:
            want["EXPORT_BUCKET"] = bucket
            if prefix:
                want["EXPORT_PREFIX"] = prefix
        if env != want:
            problems.append(f"{where}: environment {env}, expected {want} (no RETENTION = keep everything, "
                            "no EXPORT_BUCKET = no export, EXPORT_PREFIX only with a bucket and a prefix)")
    worker_env = env_map(container["Environment"], "Name", "Value")
    if worker_env.get("PARTITION_INTERVAL") != {"Ref": "PartitionInterval"}:
        problems.append("the worker's PARTITION_INTERVAL must be the PartitionInterval parameter (as maintain's)")
    # The events role: RunTask on the worker family in this cluster, PassRole on the task's roles.
    role_name = (target.get("RoleArn") or {}).get("Fn::GetAtt", [None])[0]
    role = RESOURCES.get(role_name or "", {})
    if role.get("Type") != "AWS::IAM::Role":
        return problems + ["MaintenanceRule: RoleArn must be !GetAtt of a role of the template"]
    trust = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    if [s.get("Principal") for s in trust] != [{"Service": "events.amazonaws.com"}] or \
            trust[0].get("Condition") != {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}:
        problems.append(f"{role_name}: assumed by events.amazonaws.com only, of this account (aws:SourceAccount)")
    if role["Properties"].get("ManagedPolicyArns"):
        problems.append(f"{role_name}: no managed policies")
    family = props["Family"]["Fn::Sub"] if isinstance(props["Family"], dict) else props["Family"]
    run_task = {"Fn::Sub": f"arn:${{AWS::Partition}}:ecs:${{AWS::Region}}:${{AWS::AccountId}}:task-definition/{family}:*"}
    passed = sorted([json.dumps(props["ExecutionRoleArn"]), json.dumps(props["TaskRoleArn"])])
    want_statements = [
        ("ecs:RunTask", json.dumps(run_task), {"ArnEquals": {"ecs:cluster": {"Fn::GetAtt": ["Cluster", "Arn"]}}}),
        ("iam:PassRole", passed, {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}),
    ]
    got = []
    for statement in statements(role):
        resource = statement["Resource"]
        got.append((statement["Action"], sorted(json.dumps(r) for r in resource) if isinstance(resource, list)
                    else json.dumps(resource), statement.get("Condition")))
    if sorted(got, key=str) != sorted(want_statements, key=str):
        problems.append(f"{role_name}: grants {got}, expected {want_statements} (RunTask on the worker family in "
                        "this cluster, PassRole on the worker task definition's execution and task roles)")
    return problems
