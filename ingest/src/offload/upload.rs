//! [`ObjectUpload`]: writes one object in 5 MiB parts as its bytes come, holding at most one
//! part in memory. A part's first [`FILL_WITHOUT_BUFFER`] bytes fill within the body budget
//! (`MAX_IN_FLIGHT_BODY_BYTES`), their capacity reserved as they arrive ([`grow_buffer`]): a
//! client that sends little (a stalled or forged upload) holds little and no part buffer. Past
//! that, the part takes room for a whole part in the process-wide part-buffer budget
//! (`LARGE_PAYLOAD_BUFFER_BYTES`) and keeps it until the part is uploaded: a request waits for
//! that room, and while it waits it reads nothing, so TCP slows its client down. So the parts
//! in memory are bounded by that budget plus [`FILL_WITHOUT_BUFFER`] per upload, whatever the
//! number of uploads (16 concurrent 25 MiB uploads: see docs/BENCHMARKS.md).
//!
//! An object that ends within its first part is written with one `PutObject`; a larger one
//! with `CreateMultipartUpload`, one `UploadPart` per part and `CompleteMultipartUpload`.
//! Each call is bounded by the S3 timeout. An upload that is not completed is aborted: by
//! [`ObjectUpload::abort`] on every failure the handler sees, and from `Drop` (in a task of its
//! own) when the request is dropped midway (the client went away).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::LargePayloads;
use super::s3::{PayloadStore, StoreError, StoreFuture, UploadedPart};
use crate::body::budget::{BodyBudget, Reservation, grow_buffer};
use crate::metrics;
use webhook_shared::metrics::{S3Result, record_s3_request};

/// Size of every part but the last: S3's minimum for them.
pub(crate) const PART_BYTES: usize = 5 * 1024 * 1024;
/// Bytes a part may hold before it needs room in the part-buffer budget.
pub(crate) const FILL_WITHOUT_BUFFER: usize = 64 * 1024;

/// Why a write to the object failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    /// S3 failed or did not answer in time.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The body budget has no room for the bytes now.
    #[error("no room in the body budget for the part")]
    NoRoom,
}

/// One object being written.
#[derive(Debug)]
pub(crate) struct ObjectUpload {
    store: Arc<dyn PayloadStore>,
    part_buffers: Arc<Semaphore>,
    part_buffer_total: usize,
    s3_timeout: Duration,
    key: String,
    upload_id: Option<String>,
    parts: Vec<UploadedPart>,
    part: Vec<u8>,
    /// The part's capacity, in the body budget while it has no part buffer.
    staged: Reservation,
    /// Room in the part-buffer budget, held from the part's [`FILL_WITHOUT_BUFFER`]th byte
    /// (or, for a smaller last part, from the end) until the part is uploaded.
    permit: Option<OwnedSemaphorePermit>,
    size: u64,
}

impl ObjectUpload {
    /// An upload of `key` whose part fills within `budget`; nothing is sent before the first
    /// part fills or the end.
    pub(crate) fn new(offload: &LargePayloads, key: String, budget: &BodyBudget) -> Self {
        Self {
            store: Arc::clone(&offload.store),
            part_buffers: Arc::clone(&offload.part_buffers),
            part_buffer_total: offload.part_buffer_bytes,
            s3_timeout: offload.s3_timeout,
            key,
            upload_id: None,
            parts: Vec::new(),
            part: Vec::new(),
            staged: budget.reservation(),
            permit: None,
            size: 0,
        }
    }

    /// The object's key.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// Appends `bytes` to the object, uploading each part as it fills.
    pub(crate) async fn write(&mut self, mut bytes: &[u8]) -> Result<(), WriteError> {
        while !bytes.is_empty() {
            if self.permit.is_none() && self.part.len() >= FILL_WITHOUT_BUFFER {
                self.hold_buffer().await;
            }
            let room = if self.permit.is_some() {
                PART_BYTES
            } else {
                FILL_WITHOUT_BUFFER
            };
            let taken = (room - self.part.len()).min(bytes.len());
            if self.permit.is_none() {
                grow_buffer(
                    &mut self.part,
                    taken,
                    FILL_WITHOUT_BUFFER,
                    0,
                    &mut self.staged,
                )
                .map_err(|_| WriteError::NoRoom)?;
            }
            self.part.extend_from_slice(&bytes[..taken]);
            bytes = &bytes[taken..];
            self.size += taken as u64;
            if self.part.len() == PART_BYTES {
                self.upload_part().await?;
            }
        }
        Ok(())
    }

    /// Writes what is left and makes the object appear whole; gives its size in bytes.
    pub(crate) async fn finish(&mut self) -> Result<u64, StoreError> {
        match self.upload_id.clone() {
            None => {
                let body = self.take_part().await;
                self.timed("PutObject", self.store.put_object(&self.key, body))
                    .await?;
                self.permit = None;
                self.gauge_buffers();
            }
            Some(upload_id) => {
                if !self.part.is_empty() {
                    self.upload_part().await?;
                }
                let complete = self
                    .store
                    .complete_upload(&self.key, &upload_id, &self.parts);
                self.timed("CompleteMultipartUpload", complete).await?;
                self.upload_id = None; // done: nothing to abort
            }
        }
        Ok(self.size)
    }

    /// Abandons the upload, if one was started (best effort: a failure is logged, and the
    /// bucket's lifecycle rule removes incomplete uploads).
    pub(crate) async fn abort(&mut self) {
        self.part = Vec::new();
        self.staged.shrink_to(0);
        self.permit = None;
        if let Some(upload_id) = self.upload_id.take() {
            let abort = self.store.abort_upload(&self.key, &upload_id);
            if let Err(error) = self.timed("AbortMultipartUpload", abort).await {
                tracing::warn!(key = self.key, %error, "could not abort an upload");
            }
        }
    }

    /// Sends the part in the buffer, starting the multipart upload first if need be, and gives
    /// the buffer's room back.
    async fn upload_part(&mut self) -> Result<(), StoreError> {
        let upload_id = match &self.upload_id {
            Some(id) => id.clone(),
            None => {
                let create = self.store.create_upload(&self.key);
                let id = self.timed("CreateMultipartUpload", create).await?;
                self.upload_id = Some(id.clone());
                id
            }
        };
        let number = i32::try_from(self.parts.len() + 1).unwrap_or(i32::MAX);
        let body = self.take_part().await;
        let upload = self.store.upload_part(&self.key, &upload_id, number, body);
        let e_tag = self.timed("UploadPart", upload).await?;
        self.parts.push(UploadedPart { number, e_tag });
        self.permit = None;
        self.gauge_buffers();
        Ok(())
    }

    /// Takes room for a whole part in the part-buffer budget (waited for); from then on the
    /// part counts there, not in the body budget, until the permit is dropped after its call.
    async fn hold_buffer(&mut self) {
        self.permit = Some(self.wait_for_buffer(PART_BYTES).await);
        self.part.reserve_exact(PART_BYTES - self.part.len());
        self.staged.shrink_to(0);
    }

    /// The part, with room in the part-buffer budget (a small last part takes it now).
    async fn take_part(&mut self) -> Bytes {
        if self.permit.is_none() {
            self.permit = Some(self.wait_for_buffer(self.part.capacity()).await);
        }
        let part = Bytes::from(std::mem::take(&mut self.part));
        self.staged.shrink_to(0);
        part
    }

    /// Room for `bytes` (at most one part) in the process-wide budget, waited for.
    async fn wait_for_buffer(&self, bytes: usize) -> OwnedSemaphorePermit {
        let started = Instant::now();
        let bytes = u32::try_from(bytes.min(PART_BYTES)).unwrap_or(u32::MAX);
        let permit = Arc::clone(&self.part_buffers)
            .acquire_many_owned(bytes)
            .await
            .unwrap_or_else(|closed| unreachable!("the part budget is never closed: {closed}"));
        metrics::record_part_buffer_wait(started.elapsed());
        let in_use = self.part_buffer_total - self.part_buffers.available_permits();
        metrics::gauge_part_buffers_in_use(in_use);
        permit
    }

    fn gauge_buffers(&self) {
        let in_use = self.part_buffer_total - self.part_buffers.available_permits();
        metrics::gauge_part_buffers_in_use(in_use);
    }

    /// One store call within the S3 timeout.
    async fn timed<T>(
        &self,
        operation: &'static str,
        call: StoreFuture<'_, T>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.s3_timeout, call)
            .await
            .unwrap_or_else(|_elapsed| {
                record_s3_request(operation, S3Result::Timeout);
                tracing::warn!(operation, timeout = ?self.s3_timeout, "S3 call timed out");
                Err(StoreError {
                    operation,
                    message: format!("no answer within {:?}", self.s3_timeout),
                })
            })
    }
}

impl Drop for ObjectUpload {
    fn drop(&mut self) {
        self.permit = None;
        self.gauge_buffers();
        let Some(upload_id) = self.upload_id.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = Arc::clone(&self.store);
        let key = std::mem::take(&mut self.key);
        let timeout = self.s3_timeout;
        runtime.spawn(async move {
            let abort = store.abort_upload(&key, &upload_id);
            match tokio::time::timeout(timeout, abort).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(key, %error, "could not abort an upload"),
                Err(_) => tracing::warn!(key, "aborting an upload timed out"),
            }
        });
    }
}
