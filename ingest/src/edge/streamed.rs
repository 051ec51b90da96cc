//! The handler's path for a body above the threshold: verify the headers, then stream the body
//! into the object while verifying it, complete the object, then enqueue its pointer. Every
//! failure before the object is complete aborts the upload, so nothing is stored. An object
//! whose pointer the queue did not take is left in place: the pointer may still be accepted
//! after the deadline, a retry of the same delivery writes the same key, and the bucket's
//! lifecycle rule expires the rest (ingest may only put objects).

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::pin::Pin;

use bytes::Bytes;
use chrono::Utc;
use http::HeaderMap;
use tokio::time::Instant;
use webhook_shared::envelope::StreamedEnvelope;
use webhook_shared::large_payload::{PayloadPointer, object_key};

use crate::body::ReadError;
use crate::body::RequestBody;
use crate::body::budget::Reservation;
use crate::body::pace::Pace;
use crate::edge::error::ApiError;
use crate::edge::error::read_error;
use crate::edge::state::AppState;
use crate::metrics;
use crate::offload::LargePayloads;
use crate::offload::base64_stream::{self, Base64Stream};
use crate::offload::upload::{ObjectUpload, WriteError};
use crate::sources::{Source, StreamedId};
use crate::sqs::publisher::{OutgoingMessage, Publish};
use crate::verify::StreamingCheck;

/// One request to stream, as the handler has read it so far.
#[derive(Debug)]
pub(crate) struct StreamedRequest<'a> {
    /// The `{source}` path segment.
    pub source: String,
    /// The source's settings.
    pub config: &'a Source,
    /// The request's headers, for verification.
    pub request_headers: &'a HeaderMap,
    /// The headers the envelope carries.
    pub headers: BTreeMap<String, String>,
    /// The envelope's content type.
    pub content_type: Option<String>,
    /// The FIFO message group.
    pub group_id: String,
    /// `MAX_BODY_BYTES`.
    pub limit: usize,
    /// When reading the body must be over (the body read timeout).
    pub deadline: Instant,
}

/// The body as far as the handler has read it, and the rest to come.
#[derive(Debug)]
pub(crate) struct BodySoFar<'b, B> {
    /// What was read into memory before streaming began (within the reservation), then the
    /// chunk that crossed the threshold (not reserved).
    pub read: [Bytes; 2],
    /// The rest of the body.
    pub rest: Pin<&'b mut B>,
    /// Its progress against the minimum data rate.
    pub pace: &'b mut Pace,
}

/// Streams the body (what was read, then the rest) to S3 and enqueues its pointer; gives the
/// event id once both have it. The request's `reservation` holds what was read, then the
/// encoder's buffer, then the pointer message; the part being filled is counted by the upload.
pub(crate) async fn accept<P: Publish, B: RequestBody>(
    state: &AppState<P>,
    offload: &LargePayloads,
    request: StreamedRequest<'_>,
    body: BodySoFar<'_, B>,
    reservation: &mut Reservation,
) -> Result<String, ApiError> {
    let begun = begin(&request)?;
    let mut upload = ObjectUpload::new(offload, begun.key, &state.body_budget);
    let streaming = Streaming {
        upload: &mut upload,
        encoder: Base64Stream::default(),
        encoder_room: 0,
        check: begun.check,
        ids: begun.ids,
        received: 0,
        limit: request.limit,
        retry_after_seconds: state.retry_after_seconds,
    };
    let streamed = streaming.run(begun.prefix, body, reservation);
    let streamed = tokio::time::timeout_at(request.deadline, streamed).await;
    let (event_id, object_bytes, body_bytes) =
        match streamed.unwrap_or_else(|_elapsed| Err(ApiError::BodyTimeout)) {
            Ok(done) => done,
            Err(error) => {
                upload.abort().await;
                return Err(error);
            }
        };
    let key = upload.key().to_owned();
    drop(upload);
    let pointer = Pointer {
        event_id: event_id.clone(),
        key,
        object_bytes,
    };
    publish_pointer(state, offload, request, pointer, reservation).await?;
    metrics::record_body_size(body_bytes);
    metrics::record_offloaded(object_bytes);
    Ok(event_id)
}

/// Where streaming starts, once the headers have verified.
struct Begun {
    /// The signature check, to feed the body.
    check: StreamingCheck,
    /// Where the event id comes from.
    ids: StreamedId,
    /// The object's key: from the event id when it is known before the body, else a UUIDv7.
    key: String,
    /// The envelope up to its body.
    prefix: String,
}

/// Verifies the headers (their format, the signed timestamp's age) before any of the body is
/// stored, and names the object.
fn begin(request: &StreamedRequest<'_>) -> Result<Begun, ApiError> {
    let source = request.source.as_str();
    let check = request
        .config
        .verifier
        .begin(request.request_headers, Utc::now())
        .inspect_err(|error| {
            tracing::debug!(source, %error, "webhook refused before streaming");
        })?;
    let ids = request
        .config
        .streamed_event_id(source, check.header_event_id());
    let key_id = ids
        .known_before_body()
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    let prefix = StreamedEnvelope {
        source,
        received_at: Utc::now(),
        headers: &request.headers,
        content_type: request.content_type.as_deref(),
    }
    .prefix();
    Ok(Begun {
        check,
        ids,
        key: object_key(source, &key_id),
        prefix,
    })
}

/// A complete object, to point to.
struct Pointer {
    /// The webhook's event id.
    event_id: String,
    /// The object's key.
    key: String,
    /// The object's size.
    object_bytes: u64,
}

/// Enqueues the pointer to the object within the send timeout (the `reservation` then holds
/// only the message). An object whose pointer the queue did not take is left in place and
/// counted (see the module's documentation); the answer is then 503 with `Retry-After`.
async fn publish_pointer<P: Publish>(
    state: &AppState<P>,
    offload: &LargePayloads,
    request: StreamedRequest<'_>,
    pointer: Pointer,
    reservation: &mut Reservation,
) -> Result<(), ApiError> {
    let Pointer {
        event_id,
        key,
        object_bytes,
    } = pointer;
    let message = OutgoingMessage {
        event_id,
        source: request.source,
        group_id: request.group_id,
        body: PayloadPointer {
            bucket: offload.store.bucket().to_owned(),
            key: key.clone(),
        }
        .to_json(),
        // The object holds at least the envelope's other fields: never empty.
        extended_payload_size: NonZeroU64::new(object_bytes),
        trace: None,
    };
    reservation.shrink_to(message.body.len());
    if super::publish::publish(state, message).await.is_err() {
        metrics::record_orphaned_object();
        tracing::info!(
            key,
            "the queue did not take the pointer; its object is left to a retry or the bucket's lifecycle rule"
        );
        return Err(ApiError::QueueUnavailable {
            retry_after_seconds: state.retry_after_seconds,
        });
    }
    Ok(())
}

/// One body on its way into its object.
struct Streaming<'u> {
    upload: &'u mut ObjectUpload,
    encoder: Base64Stream,
    /// The encoder buffer's capacity, held in the request's reservation.
    encoder_room: usize,
    check: StreamingCheck,
    ids: StreamedId,
    received: usize,
    limit: usize,
    retry_after_seconds: u32,
}

impl Streaming<'_> {
    /// Writes the whole object; gives the event id, the object's size and the body's.
    async fn run<B: RequestBody>(
        mut self,
        prefix: String,
        body: BodySoFar<'_, B>,
        reservation: &mut Reservation,
    ) -> Result<(String, u64, usize), ApiError> {
        let BodySoFar {
            read,
            mut rest,
            pace,
        } = body;
        self.write(prefix.as_bytes()).await?;
        for chunk in read {
            self.feed(&chunk, reservation).await?;
        }
        // What was read before is written now: only the encoder's buffer stays, and the
        // connection's read buffer while the rest streams in (see `edge/webhook.rs`).
        reservation.shrink_to(self.encoder_room + crate::body::read::READ_BUFFER_ALLOWANCE);
        let retry_after_seconds = self.retry_after_seconds;
        while let Some(data) = pace
            .next_data(rest.as_mut())
            .await
            .map_err(|error| read_error(error, retry_after_seconds))?
        {
            self.feed(&data, reservation).await?;
        }
        let verified = self.check.finish().inspect_err(|error| {
            tracing::debug!(%error, "streamed webhook refused");
        })?;
        let event_id = self.ids.finish(verified.event_id);
        let tail = [
            self.encoder.finish().to_vec(),
            StreamedEnvelope::suffix(&event_id).into_bytes(),
        ];
        for bytes in tail {
            let written = self.upload.write(&bytes).await;
            written.map_err(|error| storage_unavailable(&error, retry_after_seconds))?;
        }
        let size =
            self.upload.finish().await.map_err(|error| {
                storage_unavailable(&WriteError::Store(error), retry_after_seconds)
            })?;
        Ok((event_id, size, self.received))
    }

    /// Verifies, hashes, encodes and writes one piece of the body, after reserving room for
    /// the encoder's output.
    async fn feed(
        &mut self,
        mut chunk: &[u8],
        reservation: &mut Reservation,
    ) -> Result<(), ApiError> {
        self.received += chunk.len();
        if self.received > self.limit {
            return Err(ApiError::PayloadTooLarge { limit: self.limit });
        }
        let room = base64_stream::output_room(chunk.len());
        if room > self.encoder_room {
            let besides = reservation.bytes() - self.encoder_room;
            reservation
                .grow_to(besides + room)
                .map_err(|error| read_error(error.into(), self.retry_after_seconds))?;
            self.encoder_room = room;
        }
        self.check.update(chunk);
        self.ids.update(chunk);
        while !chunk.is_empty() {
            let (text, used) = self.encoder.encode(chunk);
            chunk = &chunk[used..];
            let written = self.upload.write(text).await;
            written.map_err(|error| storage_unavailable(&error, self.retry_after_seconds))?;
        }
        Ok(())
    }

    /// Writes bytes that are not body (the envelope around it) to the object.
    async fn write(&mut self, bytes: &[u8]) -> Result<(), ApiError> {
        let written = self.upload.write(bytes).await;
        written.map_err(|error| storage_unavailable(&error, self.retry_after_seconds))
    }
}

/// The answer when a write fails: 503 with `Retry-After`, `storage_unavailable` when S3
/// failed, `overloaded` when the body budget had no room for the part.
fn storage_unavailable(error: &WriteError, retry_after_seconds: u32) -> ApiError {
    match error {
        WriteError::Store(error) => {
            tracing::debug!(%error, "large webhook not stored");
            ApiError::StorageUnavailable {
                retry_after_seconds,
            }
        }
        WriteError::NoRoom => read_error(ReadError::NoRoom, retry_after_seconds),
    }
}

#[cfg(test)]
#[path = "streamed_tests.rs"]
mod tests;
