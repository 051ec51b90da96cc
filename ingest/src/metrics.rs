//! Every metric ingest emits, with its help text. The README's metrics table mirrors this.

use std::time::Duration;

use http::StatusCode;

/// Counter: webhook requests answered, by `status` (the HTTP status code).
pub const REQUESTS_TOTAL: &str = "webhook_ingest_requests_total";
/// Histogram: seconds from a webhook request's arrival to its answer, by `status`.
pub const REQUEST_DURATION_SECONDS: &str = "webhook_ingest_request_duration_seconds";
/// Histogram: size in bytes of accepted webhook bodies.
pub const BODY_BYTES: &str = "webhook_ingest_body_bytes";

/// Registers help texts. Call once after the recorder is installed.
pub fn describe() {
    metrics::describe_counter!(
        REQUESTS_TOTAL,
        "Webhook requests answered, by HTTP status code."
    );
    metrics::describe_histogram!(
        REQUEST_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "Time from a webhook request's arrival to its answer, by HTTP status code."
    );
    metrics::describe_histogram!(
        BODY_BYTES,
        metrics::Unit::Bytes,
        "Size of accepted webhook bodies."
    );
    metrics::describe_gauge!(
        BATCH_CALLS_LIMIT,
        "SendMessageBatch calls allowed in flight now: between 1 and BATCH_MAX_IN_FLIGHT, from the call latency observed (BATCH_ADAPTIVE_IN_FLIGHT), else BATCH_MAX_IN_FLIGHT."
    );
    metrics::describe_gauge!(
        BATCH_CALLS_IN_FLIGHT,
        "SendMessageBatch calls in flight now."
    );
}

/// Records one answered webhook request.
pub fn record_request(status: StatusCode, elapsed: Duration) {
    let status = status.as_str().to_owned();
    metrics::counter!(REQUESTS_TOTAL, "status" => status.clone()).increment(1);
    metrics::histogram!(REQUEST_DURATION_SECONDS, "status" => status).record(elapsed.as_secs_f64());
}

/// Records the size of one accepted body.
pub fn record_body_size(bytes: usize) {
    metrics::histogram!(BODY_BYTES).record(bytes as f64);
}

/// Histogram: messages per `SendMessageBatch` call.
pub const BATCH_MESSAGES: &str = "webhook_ingest_batch_messages";
/// Histogram: seconds one `SendMessageBatch` call took.
pub const SQS_CALL_DURATION_SECONDS: &str = "webhook_ingest_sqs_call_duration_seconds";
/// Counter: batch entries sent again after a retryable failure.
pub const SEND_RETRIES_TOTAL: &str = "webhook_ingest_send_retries_total";
/// Counter: messages the queue did not take, by `reason` (`rejected`, `deadline`).
pub const SEND_FAILURES_TOTAL: &str = "webhook_ingest_send_failures_total";

/// Registers the batching metrics' help texts.
pub fn describe_batching() {
    metrics::describe_histogram!(BATCH_MESSAGES, "Messages per SendMessageBatch call.");
    metrics::describe_histogram!(
        SQS_CALL_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "Time one SendMessageBatch call took."
    );
    metrics::describe_counter!(
        SEND_RETRIES_TOTAL,
        "Batch entries sent again after a retryable failure."
    );
    metrics::describe_counter!(
        SEND_FAILURES_TOTAL,
        "Messages the queue did not take, by reason (rejected: refused for good; deadline: not accepted in time)."
    );
}

/// Records one batch call.
pub fn record_batch(messages: usize, elapsed: Duration) {
    metrics::histogram!(BATCH_MESSAGES).record(messages as f64);
    metrics::histogram!(SQS_CALL_DURATION_SECONDS).record(elapsed.as_secs_f64());
}

/// Counts entries about to be retried.
pub fn record_retries(entries: usize) {
    metrics::counter!(SEND_RETRIES_TOTAL).increment(entries as u64);
}

/// Counts one message the queue did not take.
pub fn record_send_failure(reason: &'static str) {
    metrics::counter!(SEND_FAILURES_TOTAL, "reason" => reason).increment(1);
}

/// Counter: `SendMessageBatch` calls SQS refused whole for something one entry can cause,
/// whose entries were then sent again one per call.
pub const BATCH_SPLITS_TOTAL: &str = "webhook_ingest_batch_splits_total";

/// Counts one batch call split into calls of one entry each.
pub fn record_batch_split() {
    metrics::counter!(BATCH_SPLITS_TOTAL).increment(1);
}

/// Gauge: `SendMessageBatch` calls allowed in flight now (the adaptive limit).
pub const BATCH_CALLS_LIMIT: &str = "webhook_ingest_batch_calls_limit";
/// Gauge: `SendMessageBatch` calls in flight now.
pub const BATCH_CALLS_IN_FLIGHT: &str = "webhook_ingest_batch_calls_in_flight";

/// Records the limit on `SendMessageBatch` calls in flight.
pub fn gauge_batch_calls_limit(limit: usize) {
    metrics::gauge!(BATCH_CALLS_LIMIT).set(limit as f64);
}

/// Records the `SendMessageBatch` calls in flight.
pub fn gauge_batch_calls_in_flight(calls: usize) {
    metrics::gauge!(BATCH_CALLS_IN_FLIGHT).set(calls as f64);
}
