"""What scripts/buckets.py and scripts/queues.py share: the client, logging, the wait loop
and the command runner. Both run with the LocalStack venv's python (has boto3), which puts
this folder first on sys.path, so they import it as `awslocal_common`.

The LocalStack init hooks (docker/localstack/init-*.py) run inside the LocalStack container,
where this module is not mounted: they keep their own few lines.
"""
import os
import sys
import time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError


def logger(tag):
    """A function printing `[tag] msg` to stderr."""

    def log(msg):
        print(f"[{tag}] {msg}", file=sys.stderr, flush=True)

    return log


def client(service, read_timeout=30, **config):
    """A boto3 client for `service` ("s3", "sqs"): endpoint from AWS_ENDPOINT_URL_<SERVICE> or
    AWS_ENDPOINT_URL, region from AWS_REGION or AWS_DEFAULT_REGION (else us-east-1), one
    attempt per call; `config` adds botocore Config settings."""
    endpoint = os.environ.get(f"AWS_ENDPOINT_URL_{service.upper()}") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    cfg = Config(connect_timeout=2, read_timeout=read_timeout, retries={"max_attempts": 1}, **config)
    return boto3.client(service, endpoint_url=endpoint, region_name=region, config=cfg)


def error_code(err):
    """The AWS error code of a ClientError ("" when there is none)."""
    return err.response.get("Error", {}).get("Code", "")


def wait_until_answers(tag, operation, call, timeout, pid):
    """Calls `call` every 0.5 s until it returns; exits naming `operation` after `timeout`
    seconds, or as soon as process `pid` (when given) is gone."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            call()
            return
        except Exception as err:  # not up yet: connection refused, 5xx, timeout, not loaded...
            last = err
        if pid and not os.path.exists(f"/proc/{pid}"):
            sys.exit(f"[{tag}] LocalStack process {pid} exited (last error: {last})")
        if time.monotonic() >= deadline:
            sys.exit(f"[{tag}] no answer to {operation} after {timeout} s (last error: {last})")
        time.sleep(0.5)


def add_wait_parser(sub):
    """The `wait [--timeout S] [--pid PID]` subcommand."""
    w = sub.add_parser("wait")
    w.add_argument("--timeout", type=int, default=90)
    w.add_argument("--pid", type=int)


def run_command(tag, service_name, commands, args):
    """Runs `commands[args.cmd](args)`, turning AWS errors into a one-line exit."""
    try:
        commands[args.cmd](args)
    except EndpointConnectionError as err:
        sys.exit(f"[{tag}] cannot reach {service_name} ({err}); is LocalStack running? scripts/localstack.sh start")
    except ClientError as err:
        sys.exit(f"[{tag}] {service_name} error: {err}")
