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
