//! Request routing and the webhook handler: read the body within the limit, build the
//! envelope, enqueue it, and answer 202 only once the queue has it.
//!
//! [`route`] is generic over the request body, so the whole HTTP edge (routing, limits,
//! verification, error mapping) runs in-process in unit tests against a fake publisher.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use http::{Method, Request, Response, StatusCode, header};
use webhook_shared::envelope::{Envelope, is_json_content_type};
use webhook_shared::ops;
use webhook_shared::server::{self, Body};

use super::error::{ApiError, read_error};
use super::headers::envelope_headers;
use super::state::AppState;
use crate::body::RequestBody;
use crate::body::pace::Pace;
use crate::body::read::{self, Head, READ_BUFFER_ALLOWANCE};
use crate::config::{ENVELOPE_OVERHEAD_BYTES, MAX_HEADER_BYTES};
use crate::metrics;
use crate::offload::stream::{self as offload_stream, BodySoFar, StreamedRequest};
use crate::sources::Source;
use crate::sqs::publisher::{OutgoingMessage, Publish, fits_one_message};

/// Routes one request.
pub(crate) async fn route<P: Publish, B: RequestBody>(
    state: Arc<AppState<P>>,
    request: Request<B>,
) -> Response<Body> {
    let path = request.uri().path();
    if let Some(source) = path.strip_prefix("/webhooks/") {
        if !is_valid_source(source) {
            return ApiError::NotFound.into_response();
        }
        if request.method() != Method::POST {
            return ApiError::MethodNotAllowed { allow: "POST" }.into_response();
        }
        let started = Instant::now();
        let accepted = match state.sources.resolve(source) {
            Some(config) => accept_webhook(&state, source.to_owned(), config, request).await,
            None => Err(ApiError::UnknownSource),
        };
        let response = match accepted {
            Ok(id) => server::json(StatusCode::ACCEPTED, &serde_json::json!({ "id": id })),
            Err(error) => {
                if let Some(reason) = error.body_timeout_reason() {
                    metrics::record_body_timeout(reason);
                }
                error.into_response()
            }
        };
        metrics::record_request(response.status(), started.elapsed());
        return response;
    }
    // The probes answer here exactly as on the ops port, for a load balancer that checks the
    // traffic port.
    ops::probe(request.method(), path, &state.readiness)
        .unwrap_or_else(|| ApiError::NotFound.into_response())
}

/// A source name as the SPEC allows: `[a-z0-9_-]{1,64}`.
fn is_valid_source(source: &str) -> bool {
    (1..=64).contains(&source.len())
        && source
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Reads, wraps and enqueues one webhook; returns its event id once the queue has it.
async fn accept_webhook<P: Publish, B: RequestBody>(
    state: &AppState<P>,
    source: String,
    config: &Source,
    request: Request<B>,
) -> Result<String, ApiError> {
    let (parts, body) = request.into_parts();
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
        .unwrap_or_else(|| source.clone());
    let headers = envelope_headers(&parts.headers, &config.drop_headers, MAX_HEADER_BYTES)
        .map_err(|_| ApiError::HeadersTooLarge {
            limit: MAX_HEADER_BYTES,
        })?;
    if declared_length.is_some_and(|length| length > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    // Held until the answer: the body, then its message, count against the budget.
    let mut reservation = state.body_budget.reservation();
    let deadline = tokio::time::Instant::now() + state.body_read_timeout;
    // Bodies up to the threshold are read into memory; a larger one streams to S3.
    let in_memory = state.large_payloads.as_ref().map_or(limit, |l| l.threshold);
    let mut body = std::pin::pin!(body);
    let mut pace = Pace::new(state.min_body_rate);
    // A body larger than the connection's read buffer fills that buffer (hyper's, up to 64
    // KiB) as it streams in: it counts too, until the body is read. Without it, a flood of
    // slow uploads admitted with a few bytes reserved each held 64 KiB outside the budget
    // (1,500 of them: 385 MiB of RSS for a 256 MiB budget). A smaller body needs no more
    // buffer than its own bytes, which are counted as they are read.
    let expected = declared_length.map_or(limit, |length| usize::try_from(length).unwrap_or(limit));
    let allowance = if expected > READ_BUFFER_ALLOWANCE {
        READ_BUFFER_ALLOWANCE
    } else {
        0
    };
    reservation
        .grow_to(allowance)
        .map_err(|error| read_error(error, state.retry_after_seconds))?;
    let read = read::read_up_to(
        body.as_mut(),
        in_memory,
        declared_length,
        &mut reservation,
        &mut pace,
    );
    let head = tokio::time::timeout_at(deadline, read)
        .await
        .map_err(|_| ApiError::BodyTimeout)?
        .map_err(|error| read_error(error, state.retry_after_seconds))?;
    let body = match (head, &state.large_payloads) {
        (Head::Whole(body), _) => {
            // Read whole: the connection's buffer holds none of it any more.
            reservation.shrink_to(reservation.bytes().saturating_sub(allowance));
            body
        }
        (Head::Overflow { .. }, None) => return Err(ApiError::PayloadTooLarge { limit }),
        (Head::Overflow { head, crossing }, Some(offload)) => {
            let content_type = headers.get(header::CONTENT_TYPE.as_str()).cloned();
            let request = StreamedRequest {
                source,
                config,
                request_headers: &parts.headers,
                headers,
                content_type,
                group_id,
                limit,
                deadline,
            };
            let body = BodySoFar {
                read: [head, crossing],
                rest: body,
                pace: &mut pace,
            };
            return offload_stream::accept(state, offload, request, body, &mut reservation).await;
        }
    };
    let verified = config
        .verifier
        .verify(&parts.headers, &body, Utc::now())
        .inspect_err(|error| {
            tracing::debug!(source, scheme = config.verifier.scheme(), %error, "webhook refused");
        })?;
    if config.require_json && serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
        return Err(ApiError::InvalidJson);
    }
    let content_type = headers.get(header::CONTENT_TYPE.as_str()).cloned();
    let envelope = Envelope {
        id: config.event_id(&source, verified.event_id, &body),
        source,
        received_at: Utc::now(),
        headers,
        content_type,
        body,
    };
    // Room for the message (and a base64 copy of the body) while it is built, beside the body
    // (its buffer's capacity is held); then the body and headers live on only in the
    // message, so they are dropped before the wait.
    let body_bytes = envelope.body.len();
    reservation
        .grow_to(reservation.bytes().max(body_bytes) + 2 * message_bound(body_bytes))
        .map_err(|error| read_error(error, state.retry_after_seconds))?;
    let json = envelope.to_json();
    let Envelope { id, source, .. } = envelope;
    reservation.shrink_to(json.capacity());
    let message = OutgoingMessage {
        event_id: id.clone(),
        source,
        group_id,
        body: json,
        extended_payload_size: None,
    };
    if !fits_one_message(&message) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    metrics::record_body_size(body_bytes);
    // The deadline holds whatever the publisher does: the provider must see 503 before its
    // own timeout. A message still in a call may yet be accepted; the provider's retry then
    // carries the same event id (or, for sources without one, see `event_id` in the README).
    let queue_unavailable = || ApiError::QueueUnavailable {
        retry_after_seconds: state.retry_after_seconds,
    };
    tokio::time::timeout(state.send_timeout, state.publisher.publish(message))
        .await
        .map_err(|_elapsed| queue_unavailable())?
        .map_err(|_| queue_unavailable())?;
    drop(reservation);
    Ok(id)
}

/// The most bytes the envelope of a body of `body_bytes` can take: the body base64-encoded
/// (text is written as is only when that is no longer) plus the other fields.
fn message_bound(body_bytes: usize) -> usize {
    body_bytes.div_ceil(3) * 4 + ENVELOPE_OVERHEAD_BYTES
}

/// The FIFO group from the configured header, when present and valid for SQS (1 to 128
/// characters of `a-zA-Z0-9` and punctuation).
fn fifo_group(headers: &http::HeaderMap, header: Option<&http::HeaderName>) -> Option<String> {
    let value = headers.get(header?)?.to_str().ok()?;
    let valid = (1..=128).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic());
    valid.then(|| value.to_owned())
}

#[cfg(test)]
#[path = "routes_tests.rs"]
mod routes_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_names_follow_the_spec() {
        for good in ["github", "stripe-eu", "a", "shop_1", &"x".repeat(64)] {
            assert!(is_valid_source(good), "{good}");
        }
        for bad in ["", "GitHub", "a/b", "a.b", "caf\u{e9}", &"x".repeat(65)] {
            assert!(!is_valid_source(bad), "{bad}");
        }
    }
}
