//! Request routing and the webhook handler: read the body within the limit, build the
//! envelope, enqueue it, and answer 202 only once the queue has it.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use chrono::Utc;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use webhook_shared::envelope::{Envelope, is_json_content_type};
use webhook_shared::ops::Readiness;
use webhook_shared::server::{self, Body};

use crate::config::MAX_HEADER_BYTES;
use crate::error::ApiError;
use crate::headers::envelope_headers;
use crate::metrics;
use crate::publisher::{OutgoingMessage, Publish, fits_one_message};
use crate::sources::{Source, Sources};

/// What the handlers need, shared by every connection.
#[derive(Debug)]
pub struct AppState<P> {
    /// Where envelopes go.
    pub publisher: P,
    /// Whether `/readyz` says ready.
    pub readiness: Readiness,
    /// Largest accepted body in bytes.
    pub max_body_bytes: usize,
    /// `Retry-After` seconds on 503.
    pub retry_after_seconds: u32,
    /// Time a client has to send the body.
    pub body_read_timeout: std::time::Duration,
    /// The configured sources and their verifiers.
    pub sources: Sources,
    /// Header naming the FIFO message group, if configured.
    pub fifo_group_header: Option<http::HeaderName>,
}

/// Routes one request.
pub async fn route<P: Publish>(
    state: Arc<AppState<P>>,
    request: Request<Incoming>,
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
            Err(error) => error.into_response(),
        };
        metrics::record_request(response.status(), started.elapsed());
        return response;
    }
    let is_probe = matches!(path, "/healthz" | "/readyz");
    if !is_probe {
        return ApiError::NotFound.into_response();
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return ApiError::MethodNotAllowed { allow: "GET, HEAD" }.into_response();
    }
    let ready = path == "/healthz" || state.readiness.is_ready();
    let (status, word) = if ready {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
    };
    server::json(status, &serde_json::json!({ "status": word }))
}

/// A source name as the SPEC allows: `[a-z0-9_-]{1,64}`.
fn is_valid_source(source: &str) -> bool {
    (1..=64).contains(&source.len())
        && source
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Reads, wraps and enqueues one webhook; returns its event id once the queue has it.
async fn accept_webhook<P: Publish>(
    state: &AppState<P>,
    source: String,
    config: &Source,
    request: Request<Incoming>,
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
    if declared_length.is_some_and(|length| length > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let group_id = fifo_group(&parts.headers, state.fifo_group_header.as_ref())
        .unwrap_or_else(|| source.clone());
    let headers = envelope_headers(&parts.headers, &config.drop_headers, MAX_HEADER_BYTES)
        .map_err(|_| ApiError::HeadersTooLarge {
            limit: MAX_HEADER_BYTES,
        })?;
    let body = tokio::time::timeout(state.body_read_timeout, read_body(body, limit))
        .await
        .map_err(|_| ApiError::BodyTimeout)??;
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
    let json = envelope.to_json();
    let message = OutgoingMessage {
        event_id: envelope.id.clone(),
        source: envelope.source,
        group_id,
        body: json,
    };
    if !fits_one_message(&message) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    metrics::record_body_size(envelope.body.len());
    state
        .publisher
        .publish(message)
        .await
        .map_err(|_| ApiError::QueueUnavailable {
            retry_after_seconds: state.retry_after_seconds,
        })?;
    Ok(envelope.id)
}

/// The FIFO group from the configured header, when present and valid for SQS (1 to 128
/// characters of `a-zA-Z0-9` and punctuation).
fn fifo_group(headers: &http::HeaderMap, header: Option<&http::HeaderName>) -> Option<String> {
    let value = headers.get(header?)?.to_str().ok()?;
    let valid = (1..=128).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic());
    valid.then(|| value.to_owned())
}

/// Collects the body, failing with 413 as soon as it passes `limit` (never buffering more).
async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::PayloadTooLarge { limit })
        }
        Err(error) => {
            tracing::debug!(%error, "request body could not be read");
            Err(ApiError::BadBody)
        }
    }
}

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
