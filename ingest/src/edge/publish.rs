//! The last step of every webhook, inline or offloaded: its message handed to the publisher,
//! waited for at most the send timeout (else 503 with `Retry-After`), inside the message's
//! `create` span when tracing is on.

use opentelemetry::trace::Span as _;
use webhook_shared::telemetry::messaging;

use super::error::ApiError;
use super::state::AppState;
use crate::sqs::publisher::{OutgoingMessage, Publish, fits_one_message};

/// Hands the message to the publisher and waits, at most the send timeout, for the queue to
/// take it; else 503 with `Retry-After`. When tracing is on, the message's `create` span
/// covers this, and the message carries its context (refused with 413 if that attribute
/// takes it past SQS's limit).
pub(super) async fn publish<P: Publish>(
    state: &AppState<P>,
    mut message: OutgoingMessage,
) -> Result<(), ApiError> {
    let mut create = state.spans.as_ref().map(|spans| spans.create(&mut message));
    // The trace context adds an attribute; without it the message was checked when built.
    let result = if create.is_none() || fits_one_message(&message) {
        publish_within_deadline(state, message).await
    } else {
        Err(ApiError::PayloadTooLarge {
            limit: state.max_body_bytes,
        })
    };
    if let Some(span) = &mut create {
        if let Err(error) = &result {
            messaging::fail(span, error.code());
        }
        span.end();
    }
    result
}

/// [`publish`] without the span.
async fn publish_within_deadline<P: Publish>(
    state: &AppState<P>,
    message: OutgoingMessage,
) -> Result<(), ApiError> {
    // The deadline holds whatever the publisher does: the provider must see 503 before its
    // own timeout. A message still in a call may yet be accepted; the provider's retry then
    // carries the same event id (or, for sources without one, see `event_id` in the README).
    let queue_unavailable = || ApiError::QueueUnavailable {
        retry_after_seconds: state.retry_after_seconds,
    };
    tokio::time::timeout(state.send_timeout, state.publisher.publish(message))
        .await
        .map_err(|_elapsed| queue_unavailable())?
        .map_err(|_| queue_unavailable())
}
