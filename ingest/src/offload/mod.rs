//! Large webhooks through S3 (the claim-check pattern of AWS's SQS extended clients), on when
//! `LARGE_PAYLOAD_BUCKET` is set.
//!
//! A body above `LARGE_PAYLOAD_THRESHOLD_BYTES` is not held whole: it streams to S3 as it
//! arrives ([`crate::edge::streamed`]), as the object `StreamedEnvelope::prefix() + base64(body) +
//! StreamedEnvelope::suffix(id)` (the envelope an inline message would carry), in 5 MiB parts
//! that fill within the body budget as bytes arrive ([`upload`]), while its signature is computed over the same bytes
//! ([`crate::verify::StreamingCheck`]). Once the object is complete and the signature checked,
//! the SQS message is the pointer `PayloadPointer { bucket, key }.to_json()` with the
//! `ExtendedPayloadSize` attribute, sent through the same batcher and deadline as any message.
//! 202 only after S3 and SQS both have it; see `docs/large-payloads.md` for the failure
//! handling and the memory bound.

pub(crate) mod base64_stream;
pub(crate) mod s3;
#[cfg(test)]
pub(crate) mod testing;
pub(crate) mod upload;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

pub(crate) use s3::{PayloadStore, S3Store};
pub(crate) use upload::PART_BYTES;

/// What offloading needs, shared by every request.
#[derive(Debug)]
pub(crate) struct LargePayloads {
    /// Where objects go.
    pub store: Arc<dyn PayloadStore>,
    /// Bodies above this many bytes are streamed to S3; those up to it stay inline.
    pub threshold: usize,
    /// The process-wide budget for parts being uploaded (`LARGE_PAYLOAD_BUFFER_BYTES`), in
    /// bytes.
    pub part_buffers: Arc<Semaphore>,
    /// Its size in bytes.
    pub part_buffer_bytes: usize,
    /// Longest one S3 call may take.
    pub s3_timeout: Duration,
}

impl LargePayloads {
    /// Offloading to `store` above `threshold` bytes, with `part_buffer_bytes` (at least one
    /// part) for part buffers across all requests.
    pub(crate) fn new(
        store: Arc<dyn PayloadStore>,
        threshold: usize,
        part_buffer_bytes: usize,
        s3_timeout: Duration,
    ) -> Self {
        let part_buffer_bytes = part_buffer_bytes.clamp(PART_BYTES, Semaphore::MAX_PERMITS);
        Self {
            store,
            threshold,
            part_buffers: Arc::new(Semaphore::new(part_buffer_bytes)),
            part_buffer_bytes,
            s3_timeout,
        }
    }
}
