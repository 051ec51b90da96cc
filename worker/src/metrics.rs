//! Every metric the worker emits, with its help text. The README's metrics table mirrors this.

use std::time::Duration;

/// Gauge: messages in a queue, by `queue` (`main`, `dlq`) and `state` (`visible`,
/// `in_flight`, `delayed`), from GetQueueAttributes.
pub(crate) const QUEUE_MESSAGES: &str = "webhook_queue_messages";
/// Gauge: age of the oldest message the worker holds, has put back for a back-off, or saw in
/// its latest receive; 0 when caught up (see `lag.rs`).
pub(crate) const LAG_SECONDS: &str = "webhook_worker_lag_seconds";
/// Histogram: age of each message when received (now minus `SentTimestamp`).
pub(crate) const MESSAGE_AGE_SECONDS: &str = "webhook_worker_message_age_seconds";
/// Histogram: seconds from ingest's `received_at` to the database commit.
pub(crate) const END_TO_END_SECONDS: &str = "webhook_end_to_end_seconds";
/// Counter: messages handled, by `outcome` (see [`Outcome`]).
pub(crate) const MESSAGES_TOTAL: &str = "webhook_worker_messages_total";
/// Gauge: messages held (received, not yet deleted or released); never above
/// `WORKER_MAX_IN_FLIGHT`.
pub(crate) const IN_FLIGHT: &str = "webhook_worker_in_flight";
/// Gauge: the most batch writes (transactions) allowed in progress now.
pub(crate) const CONCURRENCY_LIMIT: &str = "webhook_worker_concurrency_limit";
/// Gauge: batch writes (transactions) in progress now.
pub(crate) const WRITES_IN_PROGRESS: &str = "webhook_worker_writes_in_progress";
/// Histogram: rows (events) per batch write.
pub(crate) const BATCH_ROWS: &str = "webhook_worker_batch_rows";
/// Gauge: `ReceiveMessage` calls in flight now.
pub(crate) const RECEIVES_IN_FLIGHT: &str = "webhook_worker_receives_in_flight";
/// Gauge: `ReceiveMessage` calls the worker wants in flight (its own estimate).
pub(crate) const RECEIVES_WANTED: &str = "webhook_worker_receives_wanted";
/// Gauge: held messages waiting in a stage, by `stage` (`write`: decoded, waiting for a
/// writer; `delete`: committed, waiting for a DeleteMessageBatch call).
pub(crate) const WAITING: &str = "webhook_worker_waiting_messages";
/// Counter: visibility extensions of held messages.
pub(crate) const HEARTBEATS_TOTAL: &str = "webhook_worker_heartbeats_total";
/// Gauge: pool connections, by `state` (`in_use`, `idle`).
pub(crate) const DB_CONNECTIONS: &str = "webhook_worker_db_connections";
/// Histogram: seconds one batch write took, from BEGIN to COMMIT.
pub(crate) const DB_WRITE_SECONDS: &str = "webhook_worker_db_write_seconds";
/// Counter: cuts of the adaptive write limit, by `reason` (`latency`, `pool_wait`,
/// `overload`, `remeasure`).
pub(crate) const LIMIT_DECREASES_TOTAL: &str = "webhook_worker_concurrency_limit_decreases_total";
/// Gauge: the adaptive limit's baseline: the least latency seen for writes of the size of the
/// latest one (pool wait plus BEGIN to COMMIT).
pub(crate) const WRITE_LATENCY_BASELINE: &str = "webhook_worker_write_latency_baseline_seconds";
/// Gauge: median ratio of write latency to its baseline over the adaptive limit's latest
/// window (1 when the database is as fast as it gets).
pub(crate) const WRITE_LATENCY_RATIO: &str = "webhook_worker_write_latency_ratio";
/// Gauge: 1 while receiving is paused because the database is unreachable, else 0.
pub(crate) const CIRCUIT_OPEN: &str = "webhook_worker_circuit_open";
/// Counter: database probes while the circuit is open, by `result` (`ok`, `failed`).
pub(crate) const DB_PROBES_TOTAL: &str = "webhook_worker_db_probes_total";
/// Gauge: connections this worker may hold now (its share of DATABASE_CONNECTION_BUDGET, or
/// DATABASE_MAX_CONNECTIONS without one).
pub(crate) const CONNECTION_GRANT: &str = "webhook_worker_connection_grant";
/// Gauge: live workers sharing the connection budget, as seen at the latest heartbeat.
pub(crate) const FLEET_WORKERS: &str = "webhook_worker_fleet_workers";
/// Counter: heartbeats of the connection lease, by `result` (`ok`, `failed`).
pub(crate) const LEASE_RENEWALS_TOTAL: &str = "webhook_worker_lease_renewals_total";

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

/// Registers help texts. Call once after the recorder is installed.
pub(crate) fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        QUEUE_MESSAGES,
        "Messages in a queue by queue (main, dlq) and state (visible, in_flight, delayed)."
    );
    describe_gauge!(
        LAG_SECONDS,
        Unit::Seconds,
        "Age of the oldest message held, backed off or just received; 0 when caught up."
    );
    describe_histogram!(
        MESSAGE_AGE_SECONDS,
        Unit::Seconds,
        "Age of each message when received."
    );
    describe_histogram!(
        END_TO_END_SECONDS,
        Unit::Seconds,
        "Time from ingest's received_at to the database commit."
    );
    describe_counter!(
        MESSAGES_TOTAL,
        "Messages handled, by outcome (stored, duplicate, retried, poison, refused, released)."
    );
    describe_gauge!(
        IN_FLIGHT,
        "Messages held (received, not yet deleted or released); at most WORKER_MAX_IN_FLIGHT."
    );
    describe_gauge!(
        CONCURRENCY_LIMIT,
        "Most batch writes (transactions) allowed in progress now (adaptive or fixed)."
    );
    describe_gauge!(
        WRITES_IN_PROGRESS,
        "Batch writes (transactions) in progress now."
    );
    describe_histogram!(BATCH_ROWS, "Rows (events) per batch write.");
    describe_gauge!(RECEIVES_IN_FLIGHT, "ReceiveMessage calls in flight now.");
    describe_gauge!(
        RECEIVES_WANTED,
        "ReceiveMessage calls the worker wants in flight (from the receive rate and latency)."
    );
    describe_gauge!(
        WAITING,
        "Held messages waiting for a stage: write (for a writer) or delete (for a delete call)."
    );
    describe_histogram!(
        DB_WRITE_SECONDS,
        Unit::Seconds,
        "Time one batch write took, BEGIN to COMMIT."
    );
    describe_counter!(HEARTBEATS_TOTAL, "Visibility extensions of held messages.");
    describe_counter!(
        LIMIT_DECREASES_TOTAL,
        "Cuts of the adaptive write limit, by reason (latency, pool_wait, overload, remeasure)."
    );
    describe_gauge!(
        WRITE_LATENCY_BASELINE,
        Unit::Seconds,
        "Least write latency seen for batches the size of the latest (the adaptive baseline)."
    );
    describe_gauge!(
        WRITE_LATENCY_RATIO,
        "Median write latency over its baseline in the adaptive limit's latest window."
    );
    describe_gauge!(
        CIRCUIT_OPEN,
        "1 while receiving is paused because the database is unreachable, else 0."
    );
    describe_counter!(
        DB_PROBES_TOTAL,
        "Database probes while the circuit is open, by result (ok, failed)."
    );
    describe_gauge!(
        CONNECTION_GRANT,
        "Connections this worker may hold now: its share of DATABASE_CONNECTION_BUDGET, or DATABASE_MAX_CONNECTIONS without one."
    );
    describe_gauge!(
        FLEET_WORKERS,
        "Live workers sharing DATABASE_CONNECTION_BUDGET, as seen at the latest lease heartbeat."
    );
    describe_counter!(
        LEASE_RENEWALS_TOTAL,
        "Heartbeats of the connection lease, by result (ok, failed)."
    );
    describe_gauge!(
        DB_CONNECTIONS,
        "Pool connections by state (in_use, idle); never above DATABASE_MAX_CONNECTIONS."
    );
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
pub(crate) fn gauge_write_latency(estimate: crate::adaptive::Estimate) {
    metrics::gauge!(WRITE_LATENCY_BASELINE).set(estimate.baseline_seconds);
    metrics::gauge!(WRITE_LATENCY_RATIO).set(estimate.ratio);
}

/// Sets the connection grant gauge.
pub(crate) fn gauge_connection_grant(connections: usize) {
    metrics::gauge!(CONNECTION_GRANT).set(connections as f64);
}

/// Sets the fleet size gauge.
pub(crate) fn gauge_fleet_workers(workers: usize) {
    metrics::gauge!(FLEET_WORKERS).set(workers as f64);
}

/// Counts one lease heartbeat.
pub(crate) fn record_lease_renewal(ok: bool) {
    let result = if ok { "ok" } else { "failed" };
    metrics::counter!(LEASE_RENEWALS_TOTAL, "result" => result).increment(1);
}
