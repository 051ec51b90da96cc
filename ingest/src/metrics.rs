//! Every metric ingest emits, declared once in [`METRICS`] (name, type, unit, labels, help)
//! and registered from there by [`describe`]; the README's metrics table mirrors it (a test
//! checks that). The `record_*` functions below are the only places the metrics are updated.

use std::time::Duration;

use http::StatusCode;
use metrics::Unit;
use webhook_shared::metrics::{Kind, Metric};

/// Counter: webhook requests answered, by `status` (the HTTP status code).
pub(crate) const REQUESTS_TOTAL: &str = "webhook_ingest_requests_total";
/// Histogram: seconds from a webhook request's arrival to its answer, by `status`.
pub(crate) const REQUEST_DURATION_SECONDS: &str = "webhook_ingest_request_duration_seconds";
/// Histogram: size in bytes of accepted webhook bodies.
pub(crate) const BODY_BYTES: &str = "webhook_ingest_body_bytes";
/// Histogram: messages per `SendMessageBatch` call.
pub(crate) const BATCH_MESSAGES: &str = "webhook_ingest_batch_messages";
/// Histogram: seconds one `SendMessageBatch` call took.
pub(crate) const SQS_CALL_DURATION_SECONDS: &str = "webhook_ingest_sqs_call_duration_seconds";
/// Counter: batch entries sent again after a retryable failure.
pub(crate) const SEND_RETRIES_TOTAL: &str = "webhook_ingest_send_retries_total";
/// Counter: messages the queue did not take, by `reason` (`rejected`, `deadline`).
pub(crate) const SEND_FAILURES_TOTAL: &str = "webhook_ingest_send_failures_total";
/// Gauge: bytes of request bodies and their messages held now, within
/// `MAX_IN_FLIGHT_BODY_BYTES`.
pub(crate) const BODY_BUDGET_IN_USE_BYTES: &str = "webhook_ingest_body_budget_in_use_bytes";
/// Counter: `SendMessageBatch` calls SQS refused whole for something one entry can cause,
/// whose entries were then sent again one per call.
pub(crate) const BATCH_SPLITS_TOTAL: &str = "webhook_ingest_batch_splits_total";
/// Gauge: 1 while ingest's latest SQS call or probe succeeded, else 0.
pub(crate) const QUEUE_REACHABLE: &str = "webhook_ingest_queue_reachable";
/// Gauge: `SendMessageBatch` calls allowed in flight now (the adaptive limit).
pub(crate) const BATCH_CALLS_LIMIT: &str = "webhook_ingest_batch_calls_limit";
/// Gauge: `SendMessageBatch` calls in flight now.
pub(crate) const BATCH_CALLS_IN_FLIGHT: &str = "webhook_ingest_batch_calls_in_flight";

/// Counter: webhooks accepted through S3 (their SQS message is a pointer).
pub(crate) const OFFLOADED_TOTAL: &str = "webhook_ingest_offloaded_total";
/// Counter: bytes of the S3 objects of accepted offloaded webhooks.
pub(crate) const OFFLOADED_BYTES_TOTAL: &str = "webhook_ingest_offloaded_bytes_total";
/// Counter: objects left in S3 because the queue did not take their pointer (a retry of the
/// same delivery overwrites them, the bucket's lifecycle rule expires the rest).
pub(crate) const ORPHANED_OBJECTS_TOTAL: &str = "webhook_ingest_orphaned_objects_total";
/// Gauge: bytes of part buffers held now, within `LARGE_PAYLOAD_BUFFER_BYTES`.
pub(crate) const PART_BUFFERS_IN_USE_BYTES: &str = "webhook_ingest_part_buffers_in_use_bytes";
/// Histogram: seconds a streaming request waited for room for its next part buffer.
pub(crate) const PART_BUFFER_WAIT_SECONDS: &str = "webhook_ingest_part_buffer_wait_seconds";
/// Counter: webhook requests answered 408 because their body did not come in time, by
/// `reason` (`min_rate`, `read_timeout`).
pub(crate) const BODY_TIMEOUTS_TOTAL: &str = "webhook_ingest_body_timeouts_total";
/// Counter: webhook requests answered 429 because their source was beyond its quota.
pub(crate) const QUOTA_REFUSALS_TOTAL: &str = "webhook_ingest_quota_refusals_total";

/// Every metric ingest emits besides
/// [`SHARED_METRICS`](webhook_shared::metrics::SHARED_METRICS).
pub(crate) const METRICS: &[Metric] = &[
    Metric {
        name: REQUESTS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        labels: &["status"],
        help: "Webhook requests answered, by HTTP status code.",
    },
    Metric {
        name: REQUEST_DURATION_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        labels: &["status"],
        help: "Time from a webhook request's arrival to its answer, by HTTP status code.",
    },
    Metric {
        name: BODY_BYTES,
        kind: Kind::Histogram,
        unit: Some(Unit::Bytes),
        labels: &[],
        help: "Size of accepted webhook bodies.",
    },
    Metric {
        name: BATCH_MESSAGES,
        kind: Kind::Histogram,
        unit: None,
        labels: &[],
        help: "Messages per SendMessageBatch call.",
    },
    Metric {
        name: SQS_CALL_DURATION_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        labels: &[],
        help: "Time one SendMessageBatch call took.",
    },
    Metric {
        name: SEND_RETRIES_TOTAL,
        kind: Kind::Counter,
        unit: None,
        labels: &[],
        help: "Batch entries sent again after a retryable failure.",
    },
    Metric {
        name: SEND_FAILURES_TOTAL,
        kind: Kind::Counter,
        unit: None,
        labels: &["reason"],
        help: "Messages the queue did not take, by reason (rejected: refused for good; deadline: not accepted in time).",
    },
    Metric {
        name: BODY_BUDGET_IN_USE_BYTES,
        kind: Kind::Gauge,
        unit: Some(Unit::Bytes),
        labels: &[],
        help: "Bytes of request bodies and their messages held now (at most MAX_IN_FLIGHT_BODY_BYTES; requests that find no room get 503 with code overloaded).",
    },
    Metric {
        name: QUEUE_REACHABLE,
        kind: Kind::Gauge,
        unit: None,
        labels: &[],
        help: "1 while ingest's latest SQS call or probe succeeded, else 0. Not part of /readyz: alert on it instead.",
    },
    Metric {
        name: BATCH_CALLS_LIMIT,
        kind: Kind::Gauge,
        unit: None,
        labels: &[],
        help: "SendMessageBatch calls allowed in flight now: between 1 and BATCH_MAX_IN_FLIGHT, from the call latency observed (BATCH_ADAPTIVE_IN_FLIGHT), else BATCH_MAX_IN_FLIGHT.",
    },
    Metric {
        name: BATCH_CALLS_IN_FLIGHT,
        kind: Kind::Gauge,
        unit: None,
        labels: &[],
        help: "SendMessageBatch calls in flight now.",
    },
    Metric {
        name: BATCH_SPLITS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        labels: &[],
        help: "SendMessageBatch calls SQS refused whole for something one entry can cause, whose entries were then sent again one per call.",
    },
    Metric {
        name: OFFLOADED_TOTAL,
        kind: Kind::Counter,
        unit: None,
        labels: &[],
        help: "Webhooks accepted through S3: bodies above LARGE_PAYLOAD_THRESHOLD_BYTES, whose SQS message is a pointer.",
    },
    Metric {
        name: OFFLOADED_BYTES_TOTAL,
        kind: Kind::Counter,
        unit: Some(Unit::Bytes),
        labels: &[],
        help: "Bytes of the S3 objects (envelopes, body in base64) of accepted offloaded webhooks.",
    },
    Metric {
        name: ORPHANED_OBJECTS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        labels: &[],
        help: "S3 objects left behind: the queue refused their pointer and deleting them failed too; the bucket's lifecycle rule expires them.",
    },
    Metric {
        name: PART_BUFFERS_IN_USE_BYTES,
        kind: Kind::Gauge,
        unit: Some(Unit::Bytes),
        labels: &[],
        help: "Bytes of parts (at most 5 MiB each) being uploaded to S3 now (at most LARGE_PAYLOAD_BUFFER_BYTES; a full part waits for room).",
    },
    Metric {
        name: PART_BUFFER_WAIT_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        labels: &[],
        help: "Time a full part of a webhook streaming to S3 waited for room to be uploaded.",
    },
    Metric {
        name: BODY_TIMEOUTS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        labels: &["reason"],
        help: "Webhook requests answered 408 (and their connection closed) because the body did not come in time, by reason (min_rate: slower than MIN_BODY_BYTES_PER_SECOND after BODY_RATE_GRACE_SECONDS; read_timeout: not whole within BODY_READ_TIMEOUT_SECONDS).",
    },
    Metric {
        name: QUOTA_REFUSALS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        labels: &["source"],
        help: "Webhook requests answered 429 because their source was beyond its quota in the sources file, by source (a configured source's name, or unknown).",
    },
];

/// Registers the help text, type and unit of every metric ingest emits. Call once after the
/// recorder is installed.
pub(crate) fn describe() {
    webhook_shared::metrics::describe(METRICS);
}

/// Records one answered webhook request.
pub(crate) fn record_request(status: StatusCode, elapsed: Duration) {
    let status = status.as_str().to_owned();
    metrics::counter!(REQUESTS_TOTAL, "status" => status.clone()).increment(1);
    metrics::histogram!(REQUEST_DURATION_SECONDS, "status" => status).record(elapsed.as_secs_f64());
}

/// Records the size of one accepted body.
pub(crate) fn record_body_size(bytes: usize) {
    metrics::histogram!(BODY_BYTES).record(bytes as f64);
}

/// Records one batch call.
pub(crate) fn record_batch(messages: usize, elapsed: Duration) {
    metrics::histogram!(BATCH_MESSAGES).record(messages as f64);
    metrics::histogram!(SQS_CALL_DURATION_SECONDS).record(elapsed.as_secs_f64());
}

/// Counts entries about to be retried.
pub(crate) fn record_retries(entries: usize) {
    metrics::counter!(SEND_RETRIES_TOTAL).increment(entries as u64);
}

/// Counts one message the queue did not take.
pub(crate) fn record_send_failure(reason: &'static str) {
    metrics::counter!(SEND_FAILURES_TOTAL, "reason" => reason).increment(1);
}

/// Records whether the queue answered ingest's latest call or probe.
pub(crate) fn gauge_queue_reachable(reachable: bool) {
    metrics::gauge!(QUEUE_REACHABLE).set(if reachable { 1.0 } else { 0.0 });
}

/// Records the limit on `SendMessageBatch` calls in flight.
pub(crate) fn gauge_batch_calls_limit(limit: usize) {
    metrics::gauge!(BATCH_CALLS_LIMIT).set(limit as f64);
}

/// Records the `SendMessageBatch` calls in flight.
pub(crate) fn gauge_batch_calls_in_flight(calls: usize) {
    metrics::gauge!(BATCH_CALLS_IN_FLIGHT).set(calls as f64);
}

/// Counts one batch call split into calls of one entry each.
pub(crate) fn record_batch_split() {
    metrics::counter!(BATCH_SPLITS_TOTAL).increment(1);
}

/// Counts one webhook accepted through S3, with its object's size.
pub(crate) fn record_offloaded(object_bytes: u64) {
    metrics::counter!(OFFLOADED_TOTAL).increment(1);
    metrics::counter!(OFFLOADED_BYTES_TOTAL).increment(object_bytes);
}

/// Counts one object left behind in S3.
pub(crate) fn record_orphaned_object() {
    metrics::counter!(ORPHANED_OBJECTS_TOTAL).increment(1);
}

/// Records the bytes of part buffers held now.
pub(crate) fn gauge_part_buffers_in_use(bytes: usize) {
    metrics::gauge!(PART_BUFFERS_IN_USE_BYTES).set(bytes as f64);
}

/// Counts one request answered 408 for its body, with why (`min_rate`, `read_timeout`).
pub(crate) fn record_body_timeout(reason: &'static str) {
    metrics::counter!(BODY_TIMEOUTS_TOTAL, "reason" => reason).increment(1);
}

/// Records one request refused for its source's quota (`source`: a configured source's name,
/// or `unknown`).
pub(crate) fn record_quota_refusal(source: &str) {
    metrics::counter!(QUOTA_REFUSALS_TOTAL, "source" => source.to_owned()).increment(1);
}

/// Records one wait for a part buffer.
pub(crate) fn record_part_buffer_wait(waited: Duration) {
    metrics::histogram!(PART_BUFFER_WAIT_SECONDS).record(waited.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    webhook_shared::documented_metrics_test!(METRICS);
}
