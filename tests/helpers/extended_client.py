"""AWS's Python SQS extended client (amazon-sqs-extended-client 1.0.1, from PyPI) as a
third-party producer and consumer of our queue, for the end-to-end interop tests
(tests/src/extended_client.rs runs it with the LocalStack venv's python).

  extended_client.py send QUEUE_URL BUCKET BODY_FILE
      Sends the UTF-8 text of BODY_FILE through the library with always_through_s3: the
      library stores it as an object (uuid4 key) in BUCKET and sends its pointer with the
      ExtendedPayloadSize attribute. Prints the SQS message id.
  extended_client.py receive QUEUE_URL [--max N] [--wait S]
      Receives up to N messages (default 1) within S seconds (default 10) through the
      library, which resolves pointers; prints one JSON line per message:
      {"body": <resolved body>, "attributes": {name: string value}}, then deletes the message
      (not its object: delete_payload_from_s3 stays False, the library's default).

Endpoint, region and credentials come from the environment (AWS_ENDPOINT_URL,
AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY): the library builds its S3
client from the default session, so only the environment reaches it. boto3 does not read
AWS_REGION. On 127.0.0.1 botocore addresses buckets by path by itself.
"""
import argparse
import json
import sys
import time

import boto3
import sqs_extended_client  # noqa: F401  patches boto3.Session: SQS clients become "extended"


def send(args):
    sqs = boto3.client("sqs")
    sqs.large_payload_support = args.bucket
    sqs.always_through_s3 = True
    with open(args.body_file, encoding="utf-8") as f:
        body = f.read()
    response = sqs.send_message(QueueUrl=args.queue_url, MessageBody=body)
    print(response["MessageId"], flush=True)


def receive(args):
    sqs = boto3.client("sqs")
    deadline = time.monotonic() + args.wait
    received = 0
    while received < args.max and time.monotonic() < deadline:
        wait = max(0, min(5, int(deadline - time.monotonic())))
        response = sqs.receive_message(
            QueueUrl=args.queue_url,
            MessageAttributeNames=["All"],
            MaxNumberOfMessages=min(10, args.max - received),
            WaitTimeSeconds=wait,
        )
        for message in response.get("Messages", []):
            attributes = {
                name: value.get("StringValue")
                for name, value in message.get("MessageAttributes", {}).items()
            }
            print(json.dumps({"body": message["Body"], "attributes": attributes}), flush=True)
            sqs.delete_message(QueueUrl=args.queue_url, ReceiptHandle=message["ReceiptHandle"])
            received += 1


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("send")
    s.add_argument("queue_url")
    s.add_argument("bucket")
    s.add_argument("body_file")
    r = sub.add_parser("receive")
    r.add_argument("queue_url")
    r.add_argument("--max", type=int, default=1)
    r.add_argument("--wait", type=int, default=10)
    args = p.parse_args()
    {"send": send, "receive": receive}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
