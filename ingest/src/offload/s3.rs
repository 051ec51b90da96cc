//! [`PayloadStore`]: the S3 calls an offloaded webhook needs, behind a trait so that the route
//! tests run against a fake; [`S3Store`] makes them with aws-sdk-s3 and counts each in
//! `webhook_s3_requests_total`.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;

use webhook_shared::metrics::{S3Result, record_s3_request};

/// Content type of every object: the envelope JSON.
const OBJECT_CONTENT_TYPE: &str = "application/json";

/// An S3 call failed. The cause has been logged where it happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("S3 {operation} failed: {message}")]
pub(crate) struct StoreError {
    /// The API that failed (`UploadPart`, ...).
    pub operation: &'static str,
    /// What went wrong (no secret: S3's error code and message, or the SDK's).
    pub message: String,
}

/// What one store call gives back.
pub(crate) type StoreFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// One uploaded part: its number (from 1) and the ETag S3 gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UploadedPart {
    /// Part number, 1 to 10,000.
    pub number: i32,
    /// The part's ETag.
    pub e_tag: String,
}

/// The bucket objects go to, and the calls that write them.
pub(crate) trait PayloadStore: Debug + Send + Sync + 'static {
    /// The bucket's name (for the pointer).
    fn bucket(&self) -> &str;

    /// Whether the bucket is there and reachable (`HeadBucket`).
    fn check_bucket(&self) -> StoreFuture<'_, ()>;

    /// Starts a multipart upload of `key`; gives its upload id.
    fn create_upload<'a>(&'a self, key: &'a str) -> StoreFuture<'a, String>;

    /// Uploads part `number` of an upload; gives the part's ETag.
    fn upload_part<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a str,
        number: i32,
        body: Bytes,
    ) -> StoreFuture<'a, String>;

    /// Completes an upload from its parts, in order: the object appears whole.
    fn complete_upload<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a str,
        parts: &'a [UploadedPart],
    ) -> StoreFuture<'a, ()>;

    /// Abandons an upload and frees its parts.
    fn abort_upload<'a>(&'a self, key: &'a str, upload_id: &'a str) -> StoreFuture<'a, ()>;

    /// Writes a whole object in one call (for objects of a single part).
    fn put_object<'a>(&'a self, key: &'a str, body: Bytes) -> StoreFuture<'a, ()>;
}

/// [`PayloadStore`] on S3.
#[derive(Debug, Clone)]
pub(crate) struct S3Store {
    client: Client,
    bucket: String,
}

impl S3Store {
    /// A store writing to `bucket` with `client`.
    pub(crate) fn new(client: Client, bucket: String) -> Self {
        Self { client, bucket }
    }
}

/// Counts the call and turns its error into a [`StoreError`], logged.
fn outcome<T, E>(operation: &'static str, result: Result<T, E>) -> Result<T, StoreError>
where
    E: std::error::Error + 'static,
{
    record_s3_request(
        operation,
        if result.is_ok() {
            S3Result::Ok
        } else {
            S3Result::Error
        },
    );
    result.map_err(|error| {
        let message = DisplayErrorContext(&error).to_string();
        tracing::warn!(operation, error = %message, "S3 call failed");
        StoreError { operation, message }
    })
}

/// Awaits an SDK `request` (a built `send()`), takes its [`outcome`] and gives what `answer`
/// makes of the output: the shape every [`S3Store`] call shares.
fn call<'a, O, E, T>(
    operation: &'static str,
    request: impl Future<Output = Result<O, E>> + Send + 'a,
    answer: impl FnOnce(O) -> Result<T, StoreError> + Send + 'a,
) -> StoreFuture<'a, T>
where
    E: std::error::Error + 'static,
{
    Box::pin(async move { answer(outcome(operation, request.await)?) })
}

impl PayloadStore for S3Store {
    fn bucket(&self) -> &str {
        &self.bucket
    }

    fn check_bucket(&self) -> StoreFuture<'_, ()> {
        let request = self.client.head_bucket().bucket(&self.bucket).send();
        call("HeadBucket", request, |_| Ok(()))
    }

    fn create_upload<'a>(&'a self, key: &'a str) -> StoreFuture<'a, String> {
        let request = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(OBJECT_CONTENT_TYPE)
            .send();
        call("CreateMultipartUpload", request, |created| {
            created
                .upload_id()
                .map(str::to_owned)
                .ok_or_else(|| StoreError {
                    operation: "CreateMultipartUpload",
                    message: "no upload id in the answer".to_owned(),
                })
        })
    }

    fn upload_part<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a str,
        number: i32,
        body: Bytes,
    ) -> StoreFuture<'a, String> {
        let request = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(body))
            .send();
        call("UploadPart", request, |uploaded| {
            Ok(uploaded.e_tag().unwrap_or_default().to_owned())
        })
    }

    fn complete_upload<'a>(
        &'a self,
        key: &'a str,
        upload_id: &'a str,
        parts: &'a [UploadedPart],
    ) -> StoreFuture<'a, ()> {
        let parts = parts
            .iter()
            .map(|part| {
                CompletedPart::builder()
                    .part_number(part.number)
                    .e_tag(&part.e_tag)
                    .build()
            })
            .collect();
        let request = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send();
        call("CompleteMultipartUpload", request, |_| Ok(()))
    }

    fn abort_upload<'a>(&'a self, key: &'a str, upload_id: &'a str) -> StoreFuture<'a, ()> {
        let request = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send();
        call("AbortMultipartUpload", request, |_| Ok(()))
    }

    fn put_object<'a>(&'a self, key: &'a str, body: Bytes) -> StoreFuture<'a, ()> {
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(OBJECT_CONTENT_TYPE)
            .body(ByteStream::from(body))
            .send();
        call("PutObject", request, |_| Ok(()))
    }
}
