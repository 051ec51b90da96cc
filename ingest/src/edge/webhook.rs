//! The webhook handler, in the order a request goes through it: check its head, read its
//! body within the limit and the budget (or hand a body above the threshold to the S3 path,
//! [`crate::edge::streamed`]), build the envelope and its SQS message, and publish it; the
//! answer is 202 only once the queue has it.

use std::collections::BTreeMap;
use std::pin::Pin;

use bytes::Bytes;
use chrono::Utc;
use http::request::Parts;
use http::{HeaderMap, HeaderName, Request, header};
use tokio::time::Instant;
use webhook_shared::envelope::{Envelope, is_json_content_type};

use super::error::{ApiError, read_error};
use super::headers::envelope_headers;
use super::publish::publish;
use super::state::AppState;
use crate::body::RequestBody;
use crate::body::budget::Reservation;
use crate::body::pace::Pace;
use crate::body::read::{self, Head, READ_BUFFER_ALLOWANCE};
use crate::config::{ENVELOPE_OVERHEAD_BYTES, MAX_HEADER_BYTES};
use crate::edge::streamed::{self as offload_stream, BodySoFar, StreamedRequest};
use crate::metrics;
use crate::sources::Source;
use crate::sqs::publisher::{OutgoingMessage, Publish, fits_one_message};

/// Reads, wraps and enqueues one webhook; returns its event id once the queue has it.
pub(super) async fn accept<P: Publish, B: RequestBody>(
    state: &AppState<P>,
    source: String,
    config: &Source,
    request: Request<B>,
) -> Result<String, ApiError> {
    let (parts, body) = request.into_parts();
    let head = check_head(state, &source, config, &parts)?;
    // Held until the answer: the body, then its message, count against the budget.
    let mut reservation = state.body_budget.reservation();
    let deadline = Instant::now() + state.body_read_timeout;
    let mut body = std::pin::pin!(body);
    let mut pace = Pace::new(state.min_body_rate);
    let read = read_body(
        state,
        &head,
        body.as_mut(),
        &mut pace,
        &mut reservation,
        deadline,
    );
    let body = match read.await? {
        Head::Whole(body) => body,
        Head::Overflow {
            head: read,
            crossing,
        } => {
            let Some(offload) = &state.large_payloads else {
                return Err(ApiError::PayloadTooLarge {
                    limit: state.max_body_bytes,
                });
            };
            let request = StreamedRequest {
                source,
                config,
                request_headers: &parts.headers,
                content_type: head.headers.get(header::CONTENT_TYPE.as_str()).cloned(),
                headers: head.headers,
                group_id: head.group_id,
                limit: state.max_body_bytes,
                deadline,
            };
            let body = BodySoFar {
                read: [read, crossing],
                rest: body,
                pace: &mut pace,
            };
            return offload_stream::accept(state, offload, request, body, &mut reservation).await;
        }
    };
    let message = build_message(
        state,
        source,
        config,
        &parts.headers,
        head,
        body,
        &mut reservation,
    )?;
    let id = message.event_id.clone();
    publish(state, message).await?;
    drop(reservation);
    Ok(id)
}

/// What the request's head says, checked before any of its body is read.
#[derive(Debug)]
struct CheckedHead {
    /// The `Content-Length` the client declared, if any.
    declared_length: Option<u64>,
    /// The FIFO message group.
    group_id: String,
    /// The headers the envelope carries.
    headers: BTreeMap<String, String>,
}

/// Checks the head: a JSON content type where the source asks for one (415), the headers
/// the envelope carries within [`MAX_HEADER_BYTES`] (431), a declared length within the
/// body limit (413).
fn check_head<P>(
    state: &AppState<P>,
    source: &str,
    config: &Source,
    parts: &Parts,
) -> Result<CheckedHead, ApiError> {
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if config.require_json && !content_type.is_some_and(is_json_content_type) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let limit = state.max_body_bytes;
    let declared_length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let group_id = fifo_group(&parts.headers, state.fifo_group_header.as_ref())
        .unwrap_or_else(|| source.to_owned());
    let headers = envelope_headers(&parts.headers, &config.drop_headers, MAX_HEADER_BYTES)
        .map_err(|_| ApiError::HeadersTooLarge {
            limit: MAX_HEADER_BYTES,
        })?;
    if declared_length.is_some_and(|length| length > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    Ok(CheckedHead {
        declared_length,
        group_id,
        headers,
    })
}

/// Reads the body into memory, each chunk within `reservation`, at `pace`, by `deadline`:
/// the whole body when it is within the in-memory threshold (the body limit, or
/// `LARGE_PAYLOAD_THRESHOLD_BYTES` when offloading is on), else what was read so far.
async fn read_body<P, B: RequestBody>(
    state: &AppState<P>,
    head: &CheckedHead,
    body: Pin<&mut B>,
    pace: &mut Pace,
    reservation: &mut Reservation,
    deadline: Instant,
) -> Result<Head, ApiError> {
    let limit = state.max_body_bytes;
    // Bodies up to the threshold are read into memory; a larger one streams to S3.
    let in_memory = state.large_payloads.as_ref().map_or(limit, |l| l.threshold);
    // A body larger than the connection's read buffer fills that buffer (hyper's, up to 64
    // KiB) as it streams in: it counts too, until the body is read. Without it, a flood of
    // slow uploads admitted with a few bytes reserved each held 64 KiB outside the budget
    // (1,500 of them: 385 MiB of RSS for a 256 MiB budget). A smaller body needs no more
    // buffer than its own bytes, which are counted as they are read.
    let declared_length = head.declared_length;
    let expected = declared_length.map_or(limit, |length| usize::try_from(length).unwrap_or(limit));
    let allowance = if expected > READ_BUFFER_ALLOWANCE {
        READ_BUFFER_ALLOWANCE
    } else {
        0
    };
    reservation
        .grow_to(allowance)
        .map_err(|error| read_error(error.into(), state.retry_after_seconds))?;
    let read = read::read_up_to(body, in_memory, declared_length, reservation, pace);
    let read = tokio::time::timeout_at(deadline, read)
        .await
        .map_err(|_| ApiError::BodyTimeout)?
        .map_err(|error| read_error(error, state.retry_after_seconds))?;
    if let Head::Whole(_) = read {
        // Read whole: the connection's buffer holds none of it any more.
        reservation.shrink_to(reservation.bytes().saturating_sub(allowance));
    }
    Ok(read)
}

/// Verifies the body and builds its message: the envelope serialised within the budget
/// (`reservation` then holds the message alone), refused when it does not fit one SQS
/// message.
fn build_message<P>(
    state: &AppState<P>,
    source: String,
    config: &Source,
    request_headers: &HeaderMap,
    head: CheckedHead,
    body: Bytes,
    reservation: &mut Reservation,
) -> Result<OutgoingMessage, ApiError> {
    let verified = config
        .verifier
        .verify(request_headers, &body, Utc::now())
        .inspect_err(|error| {
            tracing::debug!(source, scheme = config.verifier.scheme(), %error, "webhook refused");
        })?;
    if config.require_json && serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
        return Err(ApiError::InvalidJson);
    }
    let content_type = head.headers.get(header::CONTENT_TYPE.as_str()).cloned();
    let envelope = Envelope {
        id: config.event_id(&source, verified.event_id, &body),
        source,
        received_at: Utc::now(),
        headers: head.headers,
        content_type,
        body,
    };
    // Room for the message (and a base64 copy of the body) while it is built, beside the body
    // (its buffer's capacity is held); then the body and headers live on only in the
    // message, so they are dropped before the wait.
    let body_bytes = envelope.body.len();
    reservation
        .grow_to(reservation.bytes().max(body_bytes) + 2 * message_bound(body_bytes))
        .map_err(|error| read_error(error.into(), state.retry_after_seconds))?;
    let json = envelope.to_json();
    let Envelope { id, source, .. } = envelope;
    reservation.shrink_to(json.capacity());
    let message = OutgoingMessage {
        event_id: id,
        source,
        group_id: head.group_id,
        body: json,
        extended_payload_size: None,
        trace: None,
    };
    if !fits_one_message(&message) {
        return Err(ApiError::PayloadTooLarge {
            limit: state.max_body_bytes,
        });
    }
    metrics::record_body_size(body_bytes);
    Ok(message)
}

/// The most bytes the envelope of a body of `body_bytes` can take: the body base64-encoded
/// (text is written as is only when that is no longer) plus the other fields.
fn message_bound(body_bytes: usize) -> usize {
    body_bytes.div_ceil(3) * 4 + ENVELOPE_OVERHEAD_BYTES
}

/// The FIFO group from the configured header, when present and valid for SQS (1 to 128
/// characters of `a-zA-Z0-9` and punctuation).
fn fifo_group(headers: &HeaderMap, header: Option<&HeaderName>) -> Option<String> {
    let value = headers.get(header?)?.to_str().ok()?;
    let valid = (1..=128).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic());
    valid.then(|| value.to_owned())
}

#[cfg(test)]
#[path = "webhook_tests.rs"]
mod tests;
