"""Checks of the local containers: docker/compose.yaml's structure (services, start order,
health checks, LocalStack queues and bucket), its mounted and built files, env names against the
binaries' --help, stop grace periods and Prometheus scrape targets, its images (overridable,
public and pinned by default) and what Compose v1.29 needs; docker/Dockerfile and
.dockerignore against the Cargo workspace (members copied, pinned images, non-root user).
"""
import re
import tomllib
from urllib.parse import urlparse

import yaml

from .common import (COMPOSE_DOC, DOCKER, HELP, IMAGE_SOURCES, ROOT, STOP_MARGIN, drain_times, extra_allowed,
                     port_of, secret_envs)


def image_default(value):
    """The image compose uses when the variable is unset: `${X_IMAGE:-name:tag}` -> name:tag."""
    match = re.fullmatch(r"\$\{\w+:-([^}]+)\}", value)
    return match.group(1) if match else value


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
    if not re.fullmatch(r"localstack/localstack:4\.13\.\d+", image_default(localstack.get("image", ""))):
        problems.append("localstack: image should be pinned to localstack/localstack:4.13.x (by default)")
    ls_env = localstack.get("environment", {})
    if not {"sqs", "s3"} <= set(str(ls_env.get("SERVICES", "")).split(",")) or \
            ls_env.get("SQS_ENDPOINT_STRATEGY") != "path":
        problems.append("localstack: needs SERVICES=sqs,s3 and SQS_ENDPOINT_STRATEGY=path")
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
    buckets = {services[s]["environment"].get("LARGE_PAYLOAD_BUCKET") for s in ("ingest", "worker")}
    if len(buckets) != 1 or None in buckets:
        problems.append("ingest and worker need the same LARGE_PAYLOAD_BUCKET")
    elif f'"BUCKET_NAME", "{buckets.pop()}"' not in hook_text:
        problems.append("LARGE_PAYLOAD_BUCKET is not the bucket an init hook creates")
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


def compose_images_are_public_by_default_and_overridable_for_both_composes():
    """Each image a variable with a pinned public default, the app's build arguments defaulting
    to the Dockerfile's, the local LocalStack image at compose's version, and nothing Compose
    v1.29 rejects (a top-level `name:`; docker/.env names the project instead)."""
    problems = []
    for name, service in COMPOSE_DOC["services"].items():
        image = service.get("image", "")
        default = image_default(image)
        if default == image:
            problems.append(f"{name}: image {image!r} should be ${{VARIABLE:-{image}}}, overridable where it cannot be pulled")
        if ":" not in default.rsplit("/", 1)[-1] or default.endswith(":latest"):
            problems.append(f"{name}: default image {default!r} should be pinned to a tag")
    arg_defaults = dict(re.findall(r"^ARG (\w+)=(\S+)", (DOCKER / "Dockerfile").read_text(), re.M))
    for name, service in COMPOSE_DOC["services"].items():
        for arg, value in (service.get("build") or {}).get("args", {}).items():
            if arg not in arg_defaults:
                problems.append(f"{name}: build argument {arg} is not an ARG of docker/Dockerfile")
            elif image_default(str(value)) != arg_defaults[arg]:
                problems.append(f"{name}: build argument {arg} defaults to {image_default(str(value))!r}, the Dockerfile to {arg_defaults[arg]!r}")
    version = image_default(COMPOSE_DOC["services"]["localstack"]["image"]).rsplit(":", 1)[-1]
    spec = re.search(r'LOCALSTACK_SPEC="localstack-core\[base-runtime\]==([\d.]+)"', (DOCKER / "localstack/Dockerfile").read_text())
    if not spec or spec.group(1) != version:
        problems.append(f"docker/localstack/Dockerfile should install localstack-core {version}, compose's LocalStack")
    if f"localstack-core[base-runtime]=={version}'" not in (ROOT / "scripts/localstack.sh").read_text():
        problems.append(f"scripts/localstack.sh should install localstack-core {version}, compose's LocalStack")
    if "name" in COMPOSE_DOC:
        problems.append("compose.yaml: a top-level `name:` makes Compose v1.29 reject the file (docker/.env names the project)")
    env = DOCKER / ".env"
    if not env.is_file() or not re.search(r"^COMPOSE_PROJECT_NAME=\S+$", env.read_text(), re.M):
        problems.append("docker/.env should set COMPOSE_PROJECT_NAME")
    return problems


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
    defaults = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
    for image in re.findall(r"^FROM (\S+)", text, re.M):
        image = re.sub(r"\$\{(\w+)\}", lambda m: defaults.get(m.group(1), m.group(0)), image)
        if image != "scratch" and ":" not in image.split("/")[-1] and "@" not in image and not re.search(rf"AS {re.escape(image)}\b", text):
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
