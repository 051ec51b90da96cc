//! Every metric the worker emits, declared once in [`METRICS`] (in `table.rs`: name, type,
//! unit, labels, help) and registered from there by [`describe`]; the README's metrics table
//! mirrors it (a test checks that). The functions below are the only places the metrics are
//! updated.

use std::sync::Arc;
use std::time::Duration;

mod sources;
mod table;

pub(crate) use sources::{MAX_SOURCES, SourceLabels, check_name as check_source_name};
pub(crate) use table::*;

/// What became of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Written to the database and deleted from the queue.
    Stored,
    /// Already in the database; deleted from the queue.
    Duplicate,
    /// Not stored this time (transient database error); hidden for a back-off.
    Retried,
    /// Not an envelope this build can read; moved to the DLQ at once.
    Poison,
    /// Refused for good by the database or the handler; moved to the DLQ with the reason.
    Refused,
    /// Given back to SQS unprocessed: at shutdown, or because the database is unreachable.
    Released,
}

impl Outcome {
    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Stored => "stored",
            Self::Duplicate => "duplicate",
            Self::Retried => "retried",
            Self::Poison => "poison",
            Self::Refused => "refused",
            Self::Released => "released",
        }
    }
}

/// Registers the help text, type and unit of every metric the worker emits. Call once after
/// the recorder is installed.
pub(crate) fn describe() {
    webhook_shared::metrics::describe(METRICS);
}

/// Counts a write (or probe) that met a missing partition.
pub(crate) fn record_partition_missing() {
    metrics::counter!(PARTITION_MISSING_TOTAL).increment(1);
}

/// Whether `webhook_events` is partitioned.
pub(crate) fn gauge_table_partitioned(partitioned: bool) {
    metrics::gauge!(TABLE_PARTITIONED).set(if partitioned { 1.0 } else { 0.0 });
}

/// The partition gauges: seconds covered ahead, age of the oldest partition, the retention
/// applied and when maintenance last succeeded (Unix time, if ever).
pub(crate) fn gauge_partitions(ahead: f64, oldest: f64, retention: f64, last_success: Option<f64>) {
    metrics::gauge!(PARTITIONS_AHEAD_SECONDS).set(ahead);
    metrics::gauge!(PARTITIONS_OLDEST_AGE_SECONDS).set(oldest);
    metrics::gauge!(RETENTION_SECONDS).set(retention);
    if let Some(at) = last_success {
        metrics::gauge!(MAINTENANCE_LAST_SUCCESS).set(at);
    }
}

/// Counts `count` messages with one outcome.
pub(crate) fn record_outcomes(outcome: Outcome, count: usize) {
    metrics::counter!(MESSAGES_TOTAL, "outcome" => outcome.as_str()).increment(count as u64);
}

/// Records a duration in a histogram.
pub(crate) fn record_seconds(name: &'static str, elapsed: Duration) {
    metrics::histogram!(name).record(elapsed.as_secs_f64());
}

/// Records one committed batch write.
pub(crate) fn record_write(rows: usize, elapsed: Duration) {
    metrics::histogram!(DB_WRITE_SECONDS).record(elapsed.as_secs_f64());
    metrics::histogram!(BATCH_ROWS).record(rows as f64);
}

/// Sets the held-messages gauge.
pub(crate) fn gauge_in_flight(held: usize) {
    metrics::gauge!(IN_FLIGHT).set(held as f64);
}

/// Sets the lag gauge.
pub(crate) fn set_lag(lag: Duration) {
    metrics::gauge!(LAG_SECONDS).set(lag.as_secs_f64());
}

/// Sets one source's lag (`source`: a label of [`SourceLabels`]).
pub(crate) fn set_source_lag(source: &Arc<str>, lag: Duration) {
    metrics::gauge!(SOURCE_LAG_SECONDS, "source" => Arc::clone(source)).set(lag.as_secs_f64());
}

/// Records the age of one message of `source` (a label of [`SourceLabels`]) when received; the
/// label is shared, not copied, once per message.
pub(crate) fn record_source_message_age(source: &Arc<str>, age: Duration) {
    metrics::histogram!(SOURCE_MESSAGE_AGE_SECONDS, "source" => Arc::clone(source))
        .record(age.as_secs_f64());
}

/// Counts messages whose visibility a heartbeat extended.
pub(crate) fn record_heartbeat(messages: usize) {
    metrics::counter!(HEARTBEATS_TOTAL).increment(messages as u64);
}

/// Sets the write limit gauge.
pub(crate) fn gauge_concurrency_limit(limit: usize) {
    metrics::gauge!(CONCURRENCY_LIMIT).set(limit as f64);
}

/// Sets the writes-in-progress gauge.
pub(crate) fn gauge_writes_in_progress(writes: usize) {
    metrics::gauge!(WRITES_IN_PROGRESS).set(writes as f64);
}

/// Sets the gauge of messages waiting for `stage` (`write` or `delete`).
pub(crate) fn gauge_waiting(stage: &'static str, messages: usize) {
    metrics::gauge!(WAITING, "stage" => stage).set(messages as f64);
}

/// Sets the receives-in-flight gauge.
pub(crate) fn gauge_receives_in_flight(receives: usize) {
    metrics::gauge!(RECEIVES_IN_FLIGHT).set(receives as f64);
}

/// Sets the receives-wanted gauge.
pub(crate) fn gauge_receives_wanted(receives: usize) {
    metrics::gauge!(RECEIVES_WANTED).set(receives as f64);
}

/// Sets the pool gauges.
pub(crate) fn gauge_pool(size: u32, idle: usize) {
    let idle = idle as f64;
    metrics::gauge!(DB_CONNECTIONS, "state" => "in_use").set(f64::from(size) - idle);
    metrics::gauge!(DB_CONNECTIONS, "state" => "idle").set(idle);
}

/// Sets the circuit gauge.
pub(crate) fn gauge_circuit_open(open: bool) {
    metrics::gauge!(CIRCUIT_OPEN).set(if open { 1.0 } else { 0.0 });
}

/// Sets the S3 circuit gauge.
pub(crate) fn gauge_s3_circuit_open(open: bool) {
    metrics::gauge!(S3_CIRCUIT_OPEN).set(if open { 1.0 } else { 0.0 });
}

/// Counts one opening of the circuit.
pub(crate) fn record_circuit_open(reason: &'static str) {
    metrics::counter!(CIRCUIT_OPENS_TOTAL, "reason" => reason).increment(1);
}

/// Counts one trip of the refusal fuse.
pub(crate) fn record_fuse_trip() {
    metrics::counter!(REFUSAL_FUSE_TRIPS_TOTAL).increment(1);
}

/// Counts one database probe.
pub(crate) fn record_probe(ok: bool) {
    let result = if ok { "ok" } else { "failed" };
    metrics::counter!(DB_PROBES_TOTAL, "result" => result).increment(1);
}

/// Counts one cut of the adaptive limit.
pub(crate) fn record_limit_decrease(reason: &'static str) {
    metrics::counter!(LIMIT_DECREASES_TOTAL, "reason" => reason).increment(1);
}

/// Sets the adaptive limit's latency gauges.
pub(crate) fn gauge_write_latency(baseline_seconds: f64, ratio: f64) {
    metrics::gauge!(WRITE_LATENCY_BASELINE).set(baseline_seconds);
    metrics::gauge!(WRITE_LATENCY_RATIO).set(ratio);
}

/// Sets the connection grant gauge.
pub(crate) fn gauge_connection_grant(connections: usize) {
    metrics::gauge!(CONNECTION_GRANT).set(connections as f64);
}

/// Sets the fleet size gauge.
pub(crate) fn gauge_fleet_workers(workers: usize) {
    metrics::gauge!(FLEET_WORKERS).set(workers as f64);
}

/// How a lease heartbeat ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaseRenewal {
    /// Renewed under the fleet's lock.
    Ok,
    /// The fleet's lock was busy: only the worker's own row was renewed, its grant kept.
    Kept,
    /// Not renewed.
    Failed,
}

/// Counts one lease heartbeat.
pub(crate) fn record_lease_renewal(result: LeaseRenewal) {
    let result = match result {
        LeaseRenewal::Ok => "ok",
        LeaseRenewal::Kept => "kept",
        LeaseRenewal::Failed => "failed",
    };
    metrics::counter!(LEASE_RENEWALS_TOTAL, "result" => result).increment(1);
}

/// Counts the bytes of one fetched S3 object.
pub(crate) fn record_fetched_bytes(bytes: usize) {
    metrics::counter!(FETCHED_BYTES_TOTAL).increment(bytes as u64);
}

#[cfg(test)]
mod tests {
    use super::*;

    webhook_shared::documented_metrics_test!(METRICS);
}
