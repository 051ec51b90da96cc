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
import sys

sys.dont_write_bytecode = True  # no __pycache__ left in scripts/ by the import below

from botocore.exceptions import ClientError  # noqa: E402

import awslocal_common as common  # noqa: E402

DLQ_RETENTION = 14 * 24 * 3600  # seconds, the SQS maximum
WAIT_TIME = 20  # ReceiveMessageWaitTimeSeconds (long polling)


TAG = "queues"
log = common.logger(TAG)
error_code = common.error_code


def client(read_timeout=30):
    return common.client("sqs", read_timeout)


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
    common.wait_until_answers(TAG, "ListQueues", sqs.list_queues, args.timeout, args.pid)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create")
    c.add_argument("name")
    c.add_argument("--max-receive-count", type=int, default=5)
    c.add_argument("--visibility-timeout", type=int, default=60)
    d = sub.add_parser("delete")
    d.add_argument("name")
    common.add_wait_parser(sub)
    args = p.parse_args()
    common.run_command(TAG, "SQS", {"create": create, "delete": delete, "wait": wait}, args)


if __name__ == "__main__":
    main()
