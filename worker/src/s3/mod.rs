//! The worker's one seam to S3: [`PayloadObjects`] (read an object whole within a size limit,
//! delete it), implemented for real by [`S3Objects`] and by a fake in unit tests. Each call
//! is counted in `webhook_s3_requests_total`.

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::DisplayErrorContext;
use webhook_shared::large_payload::PayloadPointer;

use crate::metrics;
use webhook_shared::metrics::{S3Result, record_s3_request};

/// Longest time reading one object's body may take once S3 has answered (the SDK's attempt
/// timeout covers the request up to the response headers, not the streamed body).
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(120);
/// What a CopySource key escapes: everything but unreserved characters and '/'.
const COPY_SOURCE_KEY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
/// Longest time one probe of the S3 breaker may take (see `s3_health.rs`).
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an object could not be read or deleted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ObjectError {
    /// S3 says there is no such key (it was deleted after a commit, or expired).
    #[error("no such object")]
    Gone,
    /// The object is larger than the reader allowed.
    #[error("the object has {size} bytes or more, above the {limit} allowed")]
    TooLarge {
        /// Its size (or what was read of it when the read stopped).
        size: u64,
        /// The limit given.
        limit: u64,
    },
    /// Anything else (network, throttling, permissions, a missing bucket): may pass.
    #[error("{operation} failed: {message}")]
    Failed {
        /// The S3 operation.
        operation: &'static str,
        /// The cause, with its context.
        message: String,
    },
}

/// Counts one finished call in `webhook_s3_requests_total` as `ok` or `error`.
fn count(operation: &'static str, ok: bool) {
    record_s3_request(operation, if ok { S3Result::Ok } else { S3Result::Error });
}

/// [`ObjectError::Failed`] for an SDK error, with its context.
fn failed(operation: &'static str, error: impl std::error::Error) -> ObjectError {
    ObjectError::Failed {
        operation,
        message: DisplayErrorContext(error).to_string(),
    }
}

/// The S3 operations the worker uses, one call each.
pub(crate) trait PayloadObjects: Send + Sync + 'static {
    /// Reads the object whole, refusing one of more than `limit` bytes.
    fn get(
        &self,
        pointer: &PayloadPointer,
        limit: u64,
    ) -> impl Future<Output = Result<Vec<u8>, ObjectError>> + Send;

    /// Deletes the object (deleting a missing key succeeds, as in S3).
    fn delete(
        &self,
        pointer: &PayloadPointer,
    ) -> impl Future<Output = Result<(), ObjectError>> + Send;

    /// Rewrites the object onto itself (CopyObject), so the bucket's lifecycle rule counts
    /// its age from now: done before its pointer goes to the dead-letter queue, so the object
    /// outlives the pointer (see `pipeline/dead_letters.rs`).
    fn refresh(
        &self,
        pointer: &PayloadPointer,
    ) -> impl Future<Output = Result<(), ObjectError>> + Send;

    /// One cheap call that succeeds only if `bucket` can be read now (the S3 breaker's
    /// probe), within its own deadline.
    fn probe(&self, bucket: &str) -> impl Future<Output = Result<(), ObjectError>> + Send;
}

/// S3 through the AWS SDK.
#[derive(Debug, Clone)]
pub(crate) struct S3Objects {
    s3: Client,
}

impl S3Objects {
    /// Uses `s3` (see `webhook_shared::large_payload::s3_client`).
    pub(crate) fn new(s3: Client) -> Self {
        Self { s3 }
    }

    /// Fails unless `bucket` exists and this worker may use it (HeadBucket):
    /// [`ObjectError::Gone`] when there is no such bucket.
    pub(crate) async fn check_bucket(&self, bucket: &str) -> Result<(), ObjectError> {
        let result = self.s3.head_bucket().bucket(bucket).send().await;
        count("HeadBucket", result.is_ok());
        result.map(drop).map_err(|error| {
            if error.as_service_error().is_some_and(|e| e.is_not_found()) {
                ObjectError::Gone
            } else {
                failed("HeadBucket", error)
            }
        })
    }
}

impl PayloadObjects for S3Objects {
    async fn get(&self, pointer: &PayloadPointer, limit: u64) -> Result<Vec<u8>, ObjectError> {
        let read_failed = |message: String| ObjectError::Failed {
            operation: "GetObject",
            message,
        };
        let result = self
            .s3
            .get_object()
            .bucket(&pointer.bucket)
            .key(&pointer.key)
            .send()
            .await;
        let output = match result {
            Ok(output) => output,
            Err(error) => {
                if error.as_service_error().is_some_and(|e| e.is_no_such_key()) {
                    record_s3_request("GetObject", S3Result::NotFound);
                    return Err(ObjectError::Gone);
                }
                record_s3_request("GetObject", S3Result::Error);
                return Err(failed("GetObject", error));
            }
        };
        let announced = output
            .content_length()
            .and_then(|length| u64::try_from(length).ok());
        if let Some(size) = announced.filter(|&size| size > limit) {
            record_s3_request("GetObject", S3Result::Ok);
            return Err(ObjectError::TooLarge { size, limit });
        }
        let capacity = usize::try_from(announced.unwrap_or(0).min(limit)).unwrap_or(0);
        let mut body = output.body;
        let read = async {
            let mut bytes = Vec::with_capacity(capacity);
            while let Some(chunk) = body.try_next().await.map_err(|error| {
                read_failed(format!("reading the body: {}", DisplayErrorContext(error)))
            })? {
                bytes.extend_from_slice(&chunk);
                if bytes.len() as u64 > limit {
                    return Err(ObjectError::TooLarge {
                        size: bytes.len() as u64,
                        limit,
                    });
                }
            }
            Ok(bytes)
        };
        let result = match tokio::time::timeout(BODY_READ_TIMEOUT, read).await {
            Ok(result) => result,
            Err(_) => Err(read_failed(format!(
                "reading the body took more than {BODY_READ_TIMEOUT:?}"
            ))),
        };
        let ok = matches!(result, Ok(_) | Err(ObjectError::TooLarge { .. }));
        count("GetObject", ok);
        if let Ok(bytes) = &result {
            metrics::record_fetched_bytes(bytes.len());
        }
        result
    }

    async fn refresh(&self, pointer: &PayloadPointer) -> Result<(), ObjectError> {
        // CopySource is `bucket/key` with the key URL-encoded ('/' kept).
        let key = percent_encoding::utf8_percent_encode(&pointer.key, COPY_SOURCE_KEY);
        let result = self
            .s3
            .copy_object()
            .bucket(&pointer.bucket)
            .key(&pointer.key)
            .copy_source(format!("{}/{key}", pointer.bucket))
            // S3 refuses a copy onto itself that changes nothing.
            .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
            .send()
            .await;
        match result {
            Ok(_) => {
                count("CopyObject", true);
                Ok(())
            }
            Err(error)
                if error
                    .raw_response()
                    .is_some_and(|r| r.status().as_u16() == 404) =>
            {
                record_s3_request("CopyObject", S3Result::NotFound);
                Err(ObjectError::Gone)
            }
            Err(error) => {
                count("CopyObject", false);
                Err(failed("CopyObject", error))
            }
        }
    }

    async fn probe(&self, bucket: &str) -> Result<(), ObjectError> {
        tokio::time::timeout(PROBE_TIMEOUT, self.check_bucket(bucket))
            .await
            .unwrap_or_else(|_| {
                Err(ObjectError::Failed {
                    operation: "HeadBucket",
                    message: format!("no answer within {PROBE_TIMEOUT:?}"),
                })
            })
    }

    async fn delete(&self, pointer: &PayloadPointer) -> Result<(), ObjectError> {
        let result = self
            .s3
            .delete_object()
            .bucket(&pointer.bucket)
            .key(&pointer.key)
            .send()
            .await;
        count("DeleteObject", result.is_ok());
        result
            .map(drop)
            .map_err(|error| failed("DeleteObject", error))
    }
}
