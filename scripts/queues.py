"""SQS helpers for the local stack; run with the LocalStack venv's python (has boto3).

  queues.py create NAME [--max-receive-count N] [--visibility-timeout S]
  queues.py delete NAME
  queues.py wait [--timeout S] [--pid PID]   # until ListQueues answers

Endpoint, region and credentials come from the environment (AWS_ENDPOINT_URL_SQS or
AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY). create prints
QUEUE_URL=... and DLQ_URL=... on stdout; everything else goes to stderr.
"""
import argparse
import json
import os
import sys
import time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError

DLQ_RETENTION = 14 * 24 * 3600  # seconds, the SQS maximum
WAIT_TIME = 20  # ReceiveMessageWaitTimeSeconds (long polling)


def log(msg):
    print(f"[queues] {msg}", file=sys.stderr, flush=True)


def client(read_timeout=30):
    endpoint = os.environ.get("AWS_ENDPOINT_URL_SQS") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    cfg = Config(connect_timeout=2, read_timeout=read_timeout, retries={"max_attempts": 1})
    return boto3.client("sqs", endpoint_url=endpoint, region_name=region, config=cfg)


def error_code(err):
    return err.response.get("Error", {}).get("Code", "")


def dlq_name(name):
    return name[: -len(".fifo")] + "-dlq.fifo" if name.endswith(".fifo") else name + "-dlq"


def ensure_queue(sqs, name, attrs):
    """Create the queue, or bring an existing one's attributes up to date."""
    if name.endswith(".fifo"):
        attrs = {**attrs, "FifoQueue": "true"}
    try:
        url = sqs.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]
        log(f"queue {name} ready")
    except ClientError as err:
        if error_code(err) not in ("QueueAlreadyExists", "QueueNameExists"):
            raise
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        mutable = {k: v for k, v in attrs.items() if k != "FifoQueue"}
        sqs.set_queue_attributes(QueueUrl=url, Attributes=mutable)
        log(f"queue {name} existed with other attributes; updated them")
    return url


def create(args):
    sqs = client()
    dlq = dlq_name(args.name)
    dlq_url = ensure_queue(sqs, dlq, {"MessageRetentionPeriod": str(DLQ_RETENTION)})
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": args.max_receive_count}
    url = ensure_queue(
        sqs,
        args.name,
        {
            "VisibilityTimeout": str(args.visibility_timeout),
            "ReceiveMessageWaitTimeSeconds": str(WAIT_TIME),
            "RedrivePolicy": json.dumps(redrive, separators=(",", ":")),
        },
    )
    print(f"QUEUE_URL={url}")
    print(f"DLQ_URL={dlq_url}")


def delete(args):
    sqs = client()
    for name in (args.name, dlq_name(args.name)):
        try:
            url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        except ClientError as err:
            if "NonExistentQueue" in error_code(err) or "QueueDoesNotExist" in error_code(err):
                log(f"queue {name} does not exist")
                continue
            raise
        sqs.delete_queue(QueueUrl=url)
        log(f"deleted {name}")


def wait(args):
    sqs = client(read_timeout=min(30, args.timeout))
    deadline = time.monotonic() + args.timeout
    while True:
        try:
            sqs.list_queues()
            return
        except Exception as err:  # not up yet: connection refused, 5xx, timeout...
            last = err
        if args.pid and not os.path.exists(f"/proc/{args.pid}"):
            sys.exit(f"[queues] LocalStack process {args.pid} exited (last error: {last})")
        if time.monotonic() >= deadline:
            sys.exit(f"[queues] no answer to ListQueues after {args.timeout} s (last error: {last})")
        time.sleep(0.5)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create")
    c.add_argument("name")
    c.add_argument("--max-receive-count", type=int, default=5)
    c.add_argument("--visibility-timeout", type=int, default=60)
    d = sub.add_parser("delete")
    d.add_argument("name")
    w = sub.add_parser("wait")
    w.add_argument("--timeout", type=int, default=90)
    w.add_argument("--pid", type=int)
    args = p.parse_args()
    try:
        {"create": create, "delete": delete, "wait": wait}[args.cmd](args)
    except EndpointConnectionError as err:
        sys.exit(f"[queues] cannot reach SQS ({err}); is LocalStack running? scripts/localstack.sh start")
    except ClientError as err:
        sys.exit(f"[queues] SQS error: {err}")


if __name__ == "__main__":
    main()
