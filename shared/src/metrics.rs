//! The Prometheus recorder, the metrics both binaries emit, and [`Metric`]: the one table
//! entry each metric is declared with (name, type, unit, labels, help). Each binary keeps its
//! own table in its `metrics.rs` and registers it with [`describe`], so no metric can ship
//! without its help text; the README documents them all.

use metrics::Unit;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};

pub use metrics_exporter_prometheus::PrometheusHandle;

/// Counter: SQS API calls, by `operation` (the API name) and `result` (`ok` or `error`).
pub const SQS_REQUESTS_TOTAL: &str = "webhook_sqs_requests_total";

/// Counter: S3 API calls, by `operation` (the API name) and `result`.
pub const S3_REQUESTS_TOTAL: &str = "webhook_s3_requests_total";

/// How an S3 call ended, the `result` label of [`S3_REQUESTS_TOTAL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3Result {
    /// It succeeded.
    Ok,
    /// The object (or bucket) is not there.
    NotFound,
    /// It failed otherwise.
    Error,
    /// No answer within the call's deadline.
    Timeout,
}

/// The Prometheus type of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up; the name ends in `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in buckets.
    Histogram,
}

/// One metric as declared: everything `/metrics` and the README say about it.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// The metric's name.
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// Its base unit, where it has one (the name ends with it).
    pub unit: Option<Unit>,
    /// Its label names (each with a bounded set of values).
    pub labels: &'static [&'static str],
    /// The help text (`# HELP`).
    pub help: &'static str,
}

/// The metrics both binaries emit.
pub const SHARED_METRICS: &[Metric] = &[
    Metric {
        name: SQS_REQUESTS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        labels: &["operation", "result"],
        help: "SQS API calls, by operation (the API name) and result (ok or error).",
    },
    Metric {
        name: S3_REQUESTS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        labels: &["operation", "result"],
        help: "S3 API calls, by operation (the API name: ingest's uploads, the worker's GetObject, DeleteObject, HeadBucket, CopyObject) and result (ok, not_found, error, or timeout: no answer within the call's deadline).",
    },
];

/// Registers the help text, type and unit of every metric in `table`.
pub fn describe(table: &[Metric]) {
    for metric in table {
        match (metric.kind, metric.unit) {
            (Kind::Counter, Some(unit)) => {
                metrics::describe_counter!(metric.name, unit, metric.help)
            }
            (Kind::Counter, None) => metrics::describe_counter!(metric.name, metric.help),
            (Kind::Gauge, Some(unit)) => metrics::describe_gauge!(metric.name, unit, metric.help),
            (Kind::Gauge, None) => metrics::describe_gauge!(metric.name, metric.help),
            (Kind::Histogram, Some(unit)) => {
                metrics::describe_histogram!(metric.name, unit, metric.help);
            }
            (Kind::Histogram, None) => metrics::describe_histogram!(metric.name, metric.help),
        }
    }
}

/// The naming rules every table must keep (for each binary's unit test): names are unique,
/// start with `webhook_`, counters end in `_total`, and a unit is the name's suffix.
pub fn check_table(table: &[Metric]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for metric in table {
        let name = metric.name;
        if !seen.insert(name) {
            return Err(format!("{name} is declared twice"));
        }
        if !name.starts_with("webhook_") {
            return Err(format!("{name} does not start with webhook_"));
        }
        if (metric.kind == Kind::Counter) != name.ends_with("_total") {
            return Err(format!("{name}: only counters end in _total"));
        }
        let suffix = match metric.unit {
            Some(Unit::Seconds) => Some("_seconds"),
            Some(Unit::Bytes) => Some("_bytes"),
            Some(other) => return Err(format!("{name}: unit {other:?} is not a base unit")),
            None => None,
        };
        let base = name.trim_end_matches("_total");
        if let Some(suffix) = suffix
            && !base.ends_with(suffix)
        {
            return Err(format!("{name}: its unit should be its suffix {suffix}"));
        }
        if metric.help.is_empty() {
            return Err(format!("{name} has no help text"));
        }
    }
    Ok(())
}

/// What each binary's test asks of its table: [`SHARED_METRICS`] and `table` together keep the
/// naming rules of [`check_table`], and `readme` names every one of them in backticks.
pub fn check_documented(table: &[Metric], readme: &str) -> Result<(), String> {
    let all: Vec<Metric> = SHARED_METRICS.iter().chain(table).copied().collect();
    check_table(&all)?;
    match all
        .iter()
        .find(|metric| !readme.contains(&format!("`{}`", metric.name)))
    {
        Some(missing) => Err(format!("README's metrics table lacks `{}`", missing.name)),
        None => Ok(()),
    }
}

/// The unit test of a binary's metric table, written once: [`check_documented`] on `$table`
/// against the repository's README. Each binary instantiates it in its metrics module's tests.
#[macro_export]
macro_rules! documented_metrics_test {
    ($table:expr) => {
        #[test]
        fn the_table_keeps_the_naming_rules_and_the_readme_documents_it() {
            let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"));
            $crate::metrics::check_documented($table, readme).expect("valid, documented table");
        }
    };
}

/// Histogram buckets for every `*_seconds` metric: 1 ms to 1 h, roughly x2.5 apart.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// Histogram buckets of the latencies compared with a latency budget (see
/// [`FINE_BUCKET_METRICS`]): 1 ms to 1 h, about x1.5 apart below 30 s, so that a quantile read
/// from them (PromQL's `histogram_quantile`) is within a third of the truth.
const FINE_SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15,
    0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0,
    600.0, 1800.0, 3600.0,
];

/// The histograms with [`FINE_SECONDS_BUCKETS`]: the worker's request-to-commit latency.
const FINE_BUCKET_METRICS: &[&str] = &["webhook_end_to_end_seconds"];

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
    let mut builder = PrometheusBuilder::new();
    // A full name wins over a suffix (the exporter tries its matchers in that order).
    for name in FINE_BUCKET_METRICS {
        builder = builder
            .set_buckets_for_metric(Matcher::Full((*name).to_owned()), FINE_SECONDS_BUCKETS)?;
    }
    let handle = builder
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_bytes".to_owned()), BYTES_BUCKETS)?
        .install_recorder()?;
    describe(SHARED_METRICS);
    Ok(handle)
}

/// Counts one SQS call.
pub fn record_sqs_request<T, E>(operation: &'static str, result: &Result<T, E>) {
    let result = if result.is_ok() { "ok" } else { "error" };
    metrics::counter!(SQS_REQUESTS_TOTAL, "operation" => operation, "result" => result)
        .increment(1);
}

/// Counts one S3 call.
pub fn record_s3_request(operation: &'static str, result: S3Result) {
    let result = match result {
        S3Result::Ok => "ok",
        S3Result::NotFound => "not_found",
        S3Result::Error => "error",
        S3Result::Timeout => "timeout",
    };
    metrics::counter!(S3_REQUESTS_TOTAL, "operation" => operation, "result" => result).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_table_keeps_the_rules() {
        check_table(SHARED_METRICS).expect("valid");
    }

    #[test]
    fn the_rules_catch_mistakes() {
        let counter = Metric {
            name: "webhook_things",
            kind: Kind::Counter,
            unit: None,
            labels: &[],
            help: "Things.",
        };
        assert!(check_table(&[counter]).is_err(), "a counter without _total");
        let seconds = Metric {
            name: "webhook_wait",
            kind: Kind::Gauge,
            unit: Some(Unit::Seconds),
            ..counter
        };
        assert!(
            check_table(&[seconds]).is_err(),
            "seconds without the suffix"
        );
        let gauge = Metric {
            name: "webhook_things",
            kind: Kind::Gauge,
            ..counter
        };
        assert!(check_table(&[gauge, gauge]).is_err(), "declared twice");
        assert!(check_table(&[gauge]).is_ok());
    }

    #[test]
    fn an_undocumented_metric_is_named() {
        let table = [Metric {
            name: "webhook_things_total",
            kind: Kind::Counter,
            unit: None,
            labels: &[],
            help: "Things.",
        }];
        let shared = "`webhook_sqs_requests_total` `webhook_s3_requests_total`";
        let documented = format!("{shared} `webhook_things_total`");
        assert!(check_documented(&table, &documented).is_ok());
        let error = check_documented(&table, shared).expect_err("missing");
        assert!(error.contains("webhook_things_total"), "{error}");
    }
}
