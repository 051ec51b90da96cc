"""LocalStack READY hook for docker/compose.yaml: the queue pair scalable-webhook uses.

Mounted at /etc/localstack/init/ready.d/ and run by LocalStack inside its own Python process
once SQS answers (a .py hook needs no exec bit and no awslocal). Creates, idempotently:
  webhooks-dlq  14 days retention (the SQS maximum)
  webhooks      VisibilityTimeout 60, long polling 20 s, RedrivePolicy -> webhooks-dlq after 5 receives
the same attributes as deploy/cloudformation.yaml and scripts/queues.sh. The compose
healthcheck of the localstack service turns healthy only once this hook has SUCCEEDED.
Override with QUEUE_NAME, MAX_RECEIVE_COUNT and VISIBILITY_TIMEOUT in the localstack service's
environment.
"""
import json
import os

import boto3
from localstack import config

queue_name = os.environ.get("QUEUE_NAME", "webhooks")
dlq_name = f"{queue_name}-dlq"
max_receive_count = int(os.environ.get("MAX_RECEIVE_COUNT", "5"))
visibility_timeout = int(os.environ.get("VISIBILITY_TIMEOUT", "60"))

# Account 000000000000 and region us-east-1: the ids in the QUEUE_URL that compose.yaml sets.
sqs = boto3.client(
    "sqs",
    endpoint_url=config.internal_service_url(),
    region_name="us-east-1",
    aws_access_key_id="test",
    aws_secret_access_key="test",
)


def ensure_queue(name, attributes):
    """Create the queue, or bring an existing one's attributes up to date (idempotent)."""
    try:
        return sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    except sqs.exceptions.QueueNameExists:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
        return url


dlq_url = ensure_queue(dlq_name, {"MessageRetentionPeriod": str(14 * 24 * 3600)})
dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
    "QueueArn"
]
queue_url = ensure_queue(
    queue_name,
    {
        "VisibilityTimeout": str(visibility_timeout),
        "ReceiveMessageWaitTimeSeconds": "20",
        "RedrivePolicy": json.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count}
        ),
    },
)
print(f"scalable-webhook queues ready: QUEUE_URL={queue_url} DLQ_URL={dlq_url}", flush=True)
