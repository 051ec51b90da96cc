"""Checks of the CloudFormation template (deploy/cloudformation.yaml): its container
definitions equal the JSON task definitions; the worker's task-cap table (WorkerMaxTasks) and
Rules fit the database connection budget (which the tasks share through their lease table); the worker scales on backlog per task; the load
balancer drains like ingest and the metrics port is open to the scraper group only; IAM roles
are least privilege, log groups have a retention and the main queue has a redrive policy; the
large-payload bucket is private, encrypted, TLS-only, expires objects after every queue
retention plus a margin, and is LARGE_PAYLOAD_BUCKET of both services.
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


def template_roles_are_least_privilege():
    problems = []
    main, dlq = {"Fn::GetAtt": ["MainQueue", "Arn"]}, {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    bucket, objects = {"Fn::GetAtt": ["PayloadBucket", "Arn"]}, {"Fn::Sub": "${PayloadBucket.Arn}/*"}
    resources = {json.dumps(main): "MainQueue", json.dumps(dlq): "DeadLetterQueue",
                 json.dumps(bucket): "PayloadBucket", json.dumps(objects): "PayloadBucket/*"}
    # ingest only writes payloads (PutObject is every multipart call but the abort); the worker
    # reads and deletes them, and copies one onto itself (GetObject + PutObject) before its pointer
    # goes to the DLQ, so the object outlives the pointer. ListBucket: HeadBucket at start, and
    # 404 (not 403) for a missing object.
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
                                                "sqs:GetQueueAttributes", "sqs:GetQueueUrl"},
                            "MainQueue": {"sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"}},
    }
    for role, grants in allowed.items():
        granted = {}
        for statement in statements(RESOURCES[role]):
            queue = resources.get(json.dumps(statement["Resource"]))
            if queue is None:
                problems.append(f"{role}: a statement on {statement['Resource']!r}, not on a queue or the bucket")
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
