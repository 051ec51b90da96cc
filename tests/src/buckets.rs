//! The test's S3 buckets in LocalStack: creating them (one name per test, since LocalStack
//! keeps large objects in `/tmp/localstack-s3-storage/<bucket>/`, shared by every instance),
//! reading what ingest stored there, and deleting them with their objects.

use aws_sdk_s3::primitives::ByteStream;

use crate::TestStack;
use crate::queues::localstack_config;

/// One multipart upload S3 has not completed or aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    /// The object key it writes.
    pub key: String,
    /// Its upload id.
    pub upload_id: String,
}

impl TestStack {
    /// Creates a bucket of the test's own: `{name}-{n}` (e.g. `e2e-0123456789ab-0`), deleted
    /// with its objects by [`TestStack::cleanup`].
    pub async fn create_bucket(&self) -> String {
        let bucket = {
            let mut buckets = self.buckets.lock().expect("bucket list lock");
            let bucket = format!("{}-{}", self.name, buckets.len());
            buckets.push(bucket.clone());
            bucket
        };
        self.s3
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .unwrap_or_else(|error| panic!("CreateBucket {bucket}: {error:?}"));
        bucket
    }

    /// The keys of every object in `bucket`, sorted.
    pub async fn object_keys(&self, bucket: &str) -> Vec<String> {
        let (mut keys, failure) = self.listed_keys(bucket).await;
        if let Some(error) = failure {
            panic!("ListObjectsV2 {bucket}: {error}");
        }
        keys.sort();
        keys
    }

    /// `bucket`'s keys page after page, up to the last page or the first one that failed
    /// (its error, debug-printed, comes with the keys listed before it).
    async fn listed_keys(&self, bucket: &str) -> (Vec<String>, Option<String>) {
        let mut keys = Vec::new();
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(bucket)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            match page {
                Ok(page) => keys.extend(
                    page.contents()
                        .iter()
                        .filter_map(|o| o.key().map(str::to_owned)),
                ),
                Err(error) => return (keys, Some(format!("{error:?}"))),
            }
        }
        (keys, None)
    }

    /// Waits until `bucket` holds no object (the worker deletes each after its commit);
    /// panics with the keys left after `timeout`.
    pub async fn wait_for_empty_bucket(&self, bucket: &str, timeout: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let keys = self.object_keys(bucket).await;
            if keys.is_empty() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "objects still in {bucket} after {timeout:?}: {keys:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }

    /// How many objects `bucket` holds.
    pub async fn object_count(&self, bucket: &str) -> usize {
        self.object_keys(bucket).await.len()
    }

    /// An object's bytes, or `None` when there is no such key.
    pub async fn object(&self, bucket: &str, key: &str) -> Option<bytes::Bytes> {
        match self.s3.get_object().bucket(bucket).key(key).send().await {
            Ok(output) => Some(
                output
                    .body
                    .collect()
                    .await
                    .expect("reading the object's body")
                    .into_bytes(),
            ),
            Err(error) => {
                let error = error.into_service_error();
                assert!(
                    error.is_no_such_key(),
                    "GetObject {bucket}/{key}: {error:?}"
                );
                None
            }
        }
    }

    /// Stores `body` under `key` in `bucket` (one PutObject).
    pub async fn put_object(&self, bucket: &str, key: &str, body: impl Into<bytes::Bytes>) {
        self.s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(body.into()))
            .send()
            .await
            .unwrap_or_else(|error| panic!("PutObject {bucket}/{key}: {error:?}"));
    }

    /// Deletes one object (no error when it is already gone).
    pub async fn delete_object(&self, bucket: &str, key: &str) {
        self.s3
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|error| panic!("DeleteObject {bucket}/{key}: {error:?}"));
    }

    /// Multipart uploads started in `bucket` and neither completed nor aborted.
    pub async fn pending_uploads(&self, bucket: &str) -> Vec<PendingUpload> {
        let output = self
            .s3
            .list_multipart_uploads()
            .bucket(bucket)
            .send()
            .await
            .unwrap_or_else(|error| panic!("ListMultipartUploads {bucket}: {error:?}"));
        output
            .uploads()
            .iter()
            .map(|upload| PendingUpload {
                key: upload.key().unwrap_or_default().to_owned(),
                upload_id: upload.upload_id().unwrap_or_default().to_owned(),
            })
            .collect()
    }

    /// Aborts every pending upload, deletes every object, then the bucket; best effort (a
    /// bucket already gone is fine).
    pub async fn delete_bucket(&self, bucket: &str) {
        if let Ok(output) = self.s3.list_multipart_uploads().bucket(bucket).send().await {
            for upload in output.uploads() {
                let _ = self
                    .s3
                    .abort_multipart_upload()
                    .bucket(bucket)
                    .key(upload.key().unwrap_or_default())
                    .upload_id(upload.upload_id().unwrap_or_default())
                    .send()
                    .await;
            }
        }
        let (keys, _failure) = self.listed_keys(bucket).await;
        for key in keys {
            let _ = self.s3.delete_object().bucket(bucket).key(key).send().await;
        }
        let _ = self.s3.delete_bucket().bucket(bucket).send().await;
    }
}

/// An S3 client for LocalStack: the SQS endpoint (one LocalStack serves both), dummy
/// credentials, buckets addressed by path (virtual-host names do not resolve locally).
pub(crate) async fn s3_client() -> aws_sdk_s3::Client {
    let s3_config = aws_sdk_s3::config::Builder::from(&localstack_config().await)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(s3_config)
}
