//! Every metric the worker emits, with its help text. The README's metrics table mirrors this.

use std::time::Duration;

/// Gauge: messages in a queue, by `queue` (`main`, `dlq`) and `state` (`visible`,
/// `in_flight`, `delayed`), from GetQueueAttributes.
pub const QUEUE_MESSAGES: &str = "webhook_queue_messages";
/// Gauge: seconds between now and the `SentTimestamp` of the oldest message in the latest
/// receive; 0 when a receive finds the queue empty or the main queue has no visible messages.
pub const LAG_SECONDS: &str = "webhook_worker_lag_seconds";
/// Histogram: age of each message when received (now minus `SentTimestamp`).
pub const MESSAGE_AGE_SECONDS: &str = "webhook_worker_message_age_seconds";
/// Histogram: seconds from ingest's `received_at` to the database commit.
pub const END_TO_END_SECONDS: &str = "webhook_end_to_end_seconds";
/// Counter: messages handled, by `outcome` (see [`Outcome`]).
pub const MESSAGES_TOTAL: &str = "webhook_worker_messages_total";
/// Gauge: messages being processed now (never above the concurrency limit).
pub const IN_FLIGHT: &str = "webhook_worker_in_flight";
/// Gauge: the concurrency limit in force.
pub const CONCURRENCY_LIMIT: &str = "webhook_worker_concurrency_limit";
/// Counter: visibility extensions of messages still in processing.
pub const HEARTBEATS_TOTAL: &str = "webhook_worker_heartbeats_total";
/// Gauge: pool connections, by `state` (`in_use`, `idle`).
pub const DB_CONNECTIONS: &str = "webhook_worker_db_connections";
/// Histogram: seconds one database write took.
pub const DB_WRITE_SECONDS: &str = "webhook_worker_db_write_seconds";

/// What became of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Written to the database and deleted from the queue.
    Stored,
    /// Already in the database; deleted from the queue.
    Duplicate,
    /// Not stored this time (database error); hidden for a back-off, then delivered again.
    Retried,
    /// Not an envelope this build can read; moved to the DLQ at once.
    Poison,
}

impl Outcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stored => "stored",
            Self::Duplicate => "duplicate",
            Self::Retried => "retried",
            Self::Poison => "poison",
        }
    }
}

/// Registers help texts. Call once after the recorder is installed.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        QUEUE_MESSAGES,
        "Messages in a queue by queue (main, dlq) and state (visible, in_flight, delayed)."
    );
    describe_gauge!(
        LAG_SECONDS,
        Unit::Seconds,
        "Age of the oldest message in the latest receive; 0 when caught up."
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
        "Messages handled, by outcome (stored, duplicate, retried, poison)."
    );
    describe_gauge!(IN_FLIGHT, "Messages being processed now.");
    describe_gauge!(CONCURRENCY_LIMIT, "The concurrency limit in force.");
    describe_histogram!(
        DB_WRITE_SECONDS,
        Unit::Seconds,
        "Time one database write took."
    );
    describe_counter!(
        HEARTBEATS_TOTAL,
        "Visibility extensions of messages still in processing."
    );
    describe_gauge!(
        DB_CONNECTIONS,
        "Pool connections by state (in_use, idle); never above DATABASE_MAX_CONNECTIONS."
    );
}

/// Counts one handled message.
pub fn record_outcome(outcome: Outcome) {
    metrics::counter!(MESSAGES_TOTAL, "outcome" => outcome.as_str()).increment(1);
}

/// Records a duration in a histogram.
pub fn record_seconds(name: &'static str, elapsed: Duration) {
    metrics::histogram!(name).record(elapsed.as_secs_f64());
}

/// Counts messages as in flight until dropped.
#[derive(Debug)]
pub struct InFlight(usize);

impl InFlight {
    /// Starts counting `messages` messages.
    pub fn start(messages: usize) -> Self {
        metrics::gauge!(IN_FLIGHT).increment(messages as f64);
        Self(messages)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(IN_FLIGHT).decrement(self.0 as f64);
    }
}

/// Sets the lag gauge.
pub fn set_lag(lag: Duration) {
    metrics::gauge!(LAG_SECONDS).set(lag.as_secs_f64());
}

/// Counts messages whose visibility a heartbeat extended.
pub fn record_heartbeat(messages: usize) {
    metrics::counter!(HEARTBEATS_TOTAL).increment(messages as u64);
}

/// Sets the concurrency limit gauge.
pub fn gauge_concurrency(limit: u32) {
    metrics::gauge!(CONCURRENCY_LIMIT).set(f64::from(limit));
}

/// Sets the pool gauges.
pub fn gauge_pool(size: u32, idle: usize) {
    let idle = idle as f64;
    metrics::gauge!(DB_CONNECTIONS, "state" => "in_use").set(f64::from(size) - idle);
    metrics::gauge!(DB_CONNECTIONS, "state" => "idle").set(idle);
}
