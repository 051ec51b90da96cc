//! The Prometheus recorder and the metrics both binaries emit. Each binary's own metrics are
//! declared in its `metrics.rs`; the README documents them all.

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};

pub use metrics_exporter_prometheus::PrometheusHandle;

/// Counter: SQS API calls, by `operation` (the API name) and `result` (`ok` or `error`).
pub const SQS_REQUESTS_TOTAL: &str = "webhook_sqs_requests_total";

/// Histogram buckets for every `*_seconds` metric: 1 ms to 1 h, roughly x2.5 apart.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// Histogram buckets for every `*_bytes` metric: 256 B to 1 MiB, x4 apart.
const BYTES_BUCKETS: &[f64] = &[
    256.0,
    1024.0,
    4096.0,
    16_384.0,
    65_536.0,
    262_144.0,
    1_048_576.0,
];

/// Installs the process's Prometheus recorder (the `metrics` facade is process-wide by design)
/// and returns the handle that renders `/metrics`.
pub fn install_recorder() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_bytes".to_owned()), BYTES_BUCKETS)?
        .install_recorder()?;
    metrics::describe_counter!(
        SQS_REQUESTS_TOTAL,
        "SQS API calls, by operation and result (ok or error)."
    );
    Ok(handle)
}

/// Counts one SQS call.
pub fn record_sqs_request<T, E>(operation: &'static str, result: &Result<T, E>) {
    let result = if result.is_ok() { "ok" } else { "error" };
    metrics::counter!(SQS_REQUESTS_TOTAL, "operation" => operation, "result" => result)
        .increment(1);
}
