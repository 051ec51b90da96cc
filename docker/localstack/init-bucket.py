"""LocalStack READY hook for docker/compose.yaml: the bucket for webhooks too large for SQS.

Mounted at /etc/localstack/init/ready.d/ beside init-queues.py and run by LocalStack inside
its own Python process once S3 answers. Creates, idempotently, the bucket that compose.yaml
passes to ingest and worker as LARGE_PAYLOAD_BUCKET, with the settings of
deploy/cloudformation.yaml and scripts/buckets.py: SSE-S3 encryption, public access blocked,
objects expiring after 16 days (the DLQ's 14 days + 2) and unfinished multipart uploads
aborted after a day. LocalStack stores these settings but enforces none of them (objects never
expire). Override the name with BUCKET_NAME in the localstack service's environment (and
LARGE_PAYLOAD_BUCKET of ingest and worker with it).
"""
import os

import boto3
from botocore.config import Config
from localstack import config

bucket = os.environ.get("BUCKET_NAME", "scalable-webhook-payloads")

s3 = boto3.client(
    "s3",
    endpoint_url=config.internal_service_url(),
    region_name="us-east-1",
    aws_access_key_id="test",
    aws_secret_access_key="test",
    config=Config(s3={"addressing_style": "path"}),
)

try:
    s3.create_bucket(Bucket=bucket)
except (s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
    pass
s3.put_bucket_encryption(
    Bucket=bucket,
    ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
    },
)
s3.put_public_access_block(
    Bucket=bucket,
    PublicAccessBlockConfiguration={
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    },
)
s3.put_bucket_lifecycle_configuration(
    Bucket=bucket,
    LifecycleConfiguration={
        "Rules": [
            {
                "ID": "expire-payloads",
                "Status": "Enabled",
                "Filter": {"Prefix": ""},
                "Expiration": {"Days": 16},
                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
            }
        ]
    },
)
print(f"scalable-webhook bucket ready: LARGE_PAYLOAD_BUCKET={bucket}", flush=True)
