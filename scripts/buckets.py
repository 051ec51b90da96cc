"""S3 helpers for the local stack; run with the LocalStack venv's python (has boto3).

  buckets.py create NAME [--expire-days N]   # the large-payload bucket, idempotent
  buckets.py delete NAME                     # with every object and unfinished upload
  buckets.py wait [--timeout S] [--pid PID]  # until ListBuckets answers

Endpoint, region and credentials come from the environment (AWS_ENDPOINT_URL_S3 or
AWS_ENDPOINT_URL, AWS_REGION or AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
Buckets are addressed by path (http://host/bucket/key): virtual-host names do not resolve
on a local endpoint. create prints BUCKET=... on stdout; everything else goes to stderr.
create sets what deploy/cloudformation.yaml sets on the real bucket (SSE-S3 encryption,
public access blocked, expiry and unfinished-upload clean-up rules). LocalStack accepts
those settings but enforces none: its objects never expire.
"""
import argparse
import sys

sys.dont_write_bytecode = True  # no __pycache__ left in scripts/ by the import below

from botocore.exceptions import ClientError  # noqa: E402

import awslocal_common as common  # noqa: E402

# 14 days of DLQ retention (the longest a pointer can wait, scripts/queues.py) + 2 days.
DEFAULT_EXPIRE_DAYS = 16


TAG = "buckets"
log = common.logger(TAG)
error_code = common.error_code


def client(read_timeout=30):
    return common.client("s3", read_timeout, s3={"addressing_style": "path"})


def create(args):
    s3 = client()
    try:
        s3.create_bucket(Bucket=args.name)
        log(f"bucket {args.name} created")
    except ClientError as err:
        if error_code(err) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
        log(f"bucket {args.name} exists")
    s3.put_bucket_encryption(
        Bucket=args.name,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    s3.put_public_access_block(
        Bucket=args.name,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    s3.put_bucket_lifecycle_configuration(
        Bucket=args.name,
        LifecycleConfiguration={
            "Rules": [
                {
                    "ID": "expire-payloads",
                    "Status": "Enabled",
                    "Filter": {"Prefix": ""},
                    "Expiration": {"Days": args.expire_days},
                    "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
                }
            ]
        },
    )
    print(f"BUCKET={args.name}")


def delete(args):
    s3 = client()
    try:
        for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=args.name):
            for upload in page.get("Uploads", []):
                s3.abort_multipart_upload(Bucket=args.name, Key=upload["Key"], UploadId=upload["UploadId"])
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=args.name):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=args.name, Delete={"Objects": keys, "Quiet": True})
        s3.delete_bucket(Bucket=args.name)
        log(f"deleted {args.name}")
    except ClientError as err:
        if error_code(err) != "NoSuchBucket":
            raise
        log(f"bucket {args.name} does not exist")


def wait(args):
    s3 = client(read_timeout=min(30, args.timeout))
    common.wait_until_answers(TAG, "ListBuckets", s3.list_buckets, args.timeout, args.pid)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create")
    c.add_argument("name")
    c.add_argument("--expire-days", type=int, default=DEFAULT_EXPIRE_DAYS)
    d = sub.add_parser("delete")
    d.add_argument("name")
    common.add_wait_parser(sub)
    args = p.parse_args()
    common.run_command(TAG, "S3", {"create": create, "delete": delete, "wait": wait}, args)


if __name__ == "__main__":
    main()
