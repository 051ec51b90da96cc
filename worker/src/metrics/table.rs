//! The worker's metric table: each metric's name, and [`METRICS`], the one place each is
//! declared with its type, unit, labels and help text.

use metrics::Unit;
use webhook_shared::metrics::{Kind, Metric};

/// Gauge: messages in a queue, by `queue` (`main`, `dlq`) and `state` (`visible`,
/// `in_flight`, `delayed`), from GetQueueAttributes.
pub(crate) const QUEUE_MESSAGES: &str = "webhook_queue_messages";
/// Gauge: age of the oldest message the worker holds, has put back for a back-off, or saw in
/// its latest receive; 0 when caught up (see `pipeline/lag.rs`).
pub(crate) const LAG_SECONDS: &str = "webhook_worker_lag_seconds";
/// Histogram: age of each message when received (now minus `SentTimestamp`).
pub(crate) const MESSAGE_AGE_SECONDS: &str = "webhook_worker_message_age_seconds";
/// Gauge: per source, age of the oldest message of it held or put back for a back-off.
pub(crate) const SOURCE_LAG_SECONDS: &str = "webhook_worker_source_lag_seconds";
/// Histogram: per source, age of each message when received.
pub(crate) const SOURCE_MESSAGE_AGE_SECONDS: &str = "webhook_worker_source_message_age_seconds";
/// Histogram: seconds from ingest's `received_at` to the database commit.
pub(crate) const END_TO_END_SECONDS: &str = "webhook_end_to_end_seconds";
/// Counter: messages handled, by `outcome` (see [`Outcome`](super::Outcome)).
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
/// writer; `delete`: committed, waiting for a DeleteMessageBatch call; `s3`: offloaded,
/// parked until S3 can be read).
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
/// Gauge: 1 while S3 cannot be read and offloaded webhooks wait in memory, else 0.
pub(crate) const S3_CIRCUIT_OPEN: &str = "webhook_worker_s3_circuit_open";
/// Counter: times the circuit opened, by `reason` (`unreachable`, `systemic`, `refusals`).
pub(crate) const CIRCUIT_OPENS_TOTAL: &str = "webhook_worker_circuit_opens_total";
/// Counter: trips of the refusal fuse (many distinct events refused alike: see `pipeline/refusal_fuse.rs`).
pub(crate) const REFUSAL_FUSE_TRIPS_TOTAL: &str = "webhook_worker_refusal_fuse_trips_total";
/// Counter: database probes while the circuit is open, by `result` (`ok`, `failed`).
pub(crate) const DB_PROBES_TOTAL: &str = "webhook_worker_db_probes_total";
/// Gauge: connections this worker may hold now (its share of DATABASE_CONNECTION_BUDGET, or
/// DATABASE_MAX_CONNECTIONS without one).
pub(crate) const CONNECTION_GRANT: &str = "webhook_worker_connection_grant";
/// Gauge: live workers sharing the connection budget, as seen at the latest heartbeat.
pub(crate) const FLEET_WORKERS: &str = "webhook_worker_fleet_workers";
/// Counter: heartbeats of the connection lease, by `result` (`ok`, `kept`, `failed`).
pub(crate) const LEASE_RENEWALS_TOTAL: &str = "webhook_worker_lease_renewals_total";
/// Counter: bytes of offloaded webhooks (their S3 objects) fetched.
pub(crate) const FETCHED_BYTES_TOTAL: &str = "webhook_worker_payload_fetched_bytes_total";
/// Gauge: bytes of `WORKER_MAX_FETCHED_BYTES` taken now by batches resolving or writing
/// offloaded webhooks.
pub(crate) const FETCH_BUDGET_USED: &str = "webhook_worker_fetch_budget_used_bytes";
/// Counter: batch writes (and probes) that met a time no partition of `webhook_events` takes.
pub(crate) const PARTITION_MISSING_TOTAL: &str = "webhook_worker_partition_missing_total";
/// Gauge: 1 while `webhook_events` is partitioned, 0 while it is the flat table.
pub(crate) const TABLE_PARTITIONED: &str = "webhook_table_partitioned";
/// Gauge: seconds from now to the end of the range partitions cover without a gap.
pub(crate) const PARTITIONS_AHEAD_SECONDS: &str = "webhook_partitions_ahead_seconds";
/// Gauge: age of the oldest partition's lower bound.
pub(crate) const PARTITIONS_OLDEST_AGE_SECONDS: &str = "webhook_partitions_oldest_age_seconds";
/// Gauge: the RETENTION the latest `worker maintain` applied; 0 for none.
pub(crate) const RETENTION_SECONDS: &str = "webhook_retention_seconds";
/// Gauge: when `worker maintain` last finished without error (Unix time).
pub(crate) const MAINTENANCE_LAST_SUCCESS: &str =
    "webhook_maintenance_last_success_timestamp_seconds";

/// Every metric the worker emits besides
/// [`SHARED_METRICS`](webhook_shared::metrics::SHARED_METRICS).
pub(crate) const METRICS: &[Metric] = &[
    Metric {
        name: QUEUE_MESSAGES,
        kind: Kind::Gauge,
        unit: None,
        labels: &["queue", "state"],
        help: "Messages in a queue by queue (main, dlq) and state (visible, in_flight, delayed).",
    },
    Metric {
        name: LAG_SECONDS,
        kind: Kind::Gauge,
        unit: Some(Unit::Seconds),
        labels: &[],
        help: "Age of the oldest message held, backed off or just received; 0 when caught up.",
    },
    Metric {
        name: MESSAGE_AGE_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        labels: &[],
        help: "Age of each message when received.",
    },
    Metric {
        name: SOURCE_LAG_SECONDS,
        kind: Kind::Gauge,
        unit: Some(Unit::Seconds),
        labels: &["source"],
        help: "Per source (named in METRICS_SOURCES, else other): age of the oldest message of it the worker holds or has put back for a back-off; 0 when none (messages still in the queue are not seen).",
    },
    Metric {
        name: SOURCE_MESSAGE_AGE_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        labels: &["source"],
        help: "Per source (named in METRICS_SOURCES, else other): age of each message when received.",
    },
    Metric {
        name: END_TO_END_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        labels: &[],
        help: "Time from ingest's received_at to the database commit.",
    },
    Metric {
        name: MESSAGES_TOTAL,
        kind: Kind::Counter,
        unit: None,
        labels: &["outcome"],
        help: "Messages handled, by outcome (stored, duplicate, retried, poison, refused, released).",
    },
    Metric {
        name: IN_FLIGHT,
        kind: Kind::Gauge,
        unit: None,
        labels: &[],
        help: "Messages held (received, not yet deleted or released); at most WORKER_MAX_IN_FLIGHT.",
    },
    Metric {
        name: CONCURRENCY_LIMIT,
        kind: Kind::Gauge,
        unit: None,
        labels: &[],
        help: "Most batch writes (transactions) allowed in progress now (adaptive or fixed).",
    },
    Metric {
        name: WRITES_IN_PROGRESS,
        kind: Kind::Gauge,
        unit: None,
        labels: &[],
        help: "Batch writes (transactions) in progress now.",
    },
    Metric {
        name: BATCH_ROWS,
        kind: Kind::Histogram,
        unit: None,
        labels: &[],
        help: "Rows (events) per batch write.",
    },
    Metric {
        name: RECEIVES_IN_FLIGHT,
        kind: Kind::Gauge,
        unit: None,
        labels: &[],
        help: "ReceiveMessage calls in flight now.",
    },
    Metric {
        name: RECEIVES_WANTED,
        kind: Kind::Gauge,
        unit: None,
        labels: &[],
        help: "ReceiveMessage calls the worker wants in flight (from the receive rate and latency).",
    },
    Metric {
        name: WAITING,
        kind: Kind::Gauge,
        unit: None,
        labels: &["stage"],
        help: "Held messages waiting for a stage: write (for a writer), delete (for a delete call) or s3 (parked until S3 can be read).",
    },
    Metric {
        name: HEARTBEATS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        labels: &[],
        help: "Visibility extensions of held messages.",
    },
    Metric {
        name: DB_CONNECTIONS,
        kind: Kind::Gauge,
        unit: None,
        labels: &["state"],
        help: "Pool connections by state (in_use, idle); never above DATABASE_MAX_CONNECTIONS.",
    },
    Metric {
        name: DB_WRITE_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        labels: &[],
        help: "Time one batch write took, BEGIN to COMMIT.",
    },
    Metric {
        name: LIMIT_DECREASES_TOTAL,
        kind: Kind::Counter,
        unit: None,
        labels: &["reason"],
        help: "Cuts of the adaptive write limit, by reason (latency, pool_wait, overload, remeasure).",
    },
    Metric {
        name: WRITE_LATENCY_BASELINE,
        kind: Kind::Gauge,
        unit: Some(Unit::Seconds),
        labels: &[],
        help: "Least write latency seen for batches the size of the latest (the adaptive baseline).",
    },
    Metric {
        name: WRITE_LATENCY_RATIO,
        kind: Kind::Gauge,
        unit: None,
        labels: &[],
        help: "Median write latency over its baseline in the adaptive limit's latest window.",
    },
    Metric {
        name: CIRCUIT_OPEN,
        kind: Kind::Gauge,
        unit: None,
        labels: &[],
        help: "1 while receiving is paused because the database cannot take writes, else 0.",
    },
    Metric {
        name: S3_CIRCUIT_OPEN,
        kind: Kind::Gauge,
        unit: None,
        labels: &[],
        help: "1 while S3 cannot be read and offloaded webhooks wait in memory (small ones keep flowing), else 0.",
    },
    Metric {
        name: CIRCUIT_OPENS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        labels: &["reason"],
        help: "Times the circuit opened (receiving paused), by reason (unreachable, systemic, refusals).",
    },
    Metric {
        name: REFUSAL_FUSE_TRIPS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        labels: &[],
        help: "Trips of the refusal fuse: many distinct events refused alike, held instead of dead-lettered.",
    },
    Metric {
        name: DB_PROBES_TOTAL,
        kind: Kind::Counter,
        unit: None,
        labels: &["result"],
        help: "Database probes while the circuit is open, by result (ok, failed).",
    },
    Metric {
        name: CONNECTION_GRANT,
        kind: Kind::Gauge,
        unit: None,
        labels: &[],
        help: "Connections this worker may hold now: its share of DATABASE_CONNECTION_BUDGET, or DATABASE_MAX_CONNECTIONS without one.",
    },
    Metric {
        name: FLEET_WORKERS,
        kind: Kind::Gauge,
        unit: None,
        labels: &[],
        help: "Live workers sharing DATABASE_CONNECTION_BUDGET, as seen at the latest lease heartbeat.",
    },
    Metric {
        name: LEASE_RENEWALS_TOTAL,
        kind: Kind::Counter,
        unit: None,
        labels: &["result"],
        help: "Heartbeats of the connection lease, by result (ok; kept: the fleet's lock was busy, only this worker's own row was renewed; failed).",
    },
    Metric {
        name: FETCHED_BYTES_TOTAL,
        kind: Kind::Counter,
        unit: Some(Unit::Bytes),
        labels: &[],
        help: "Bytes of offloaded webhooks (their S3 objects) fetched.",
    },
    Metric {
        name: FETCH_BUDGET_USED,
        kind: Kind::Gauge,
        unit: Some(Unit::Bytes),
        labels: &[],
        help: "Bytes of WORKER_MAX_FETCHED_BYTES taken now by batches fetching or writing offloaded webhooks.",
    },
    Metric {
        name: PARTITION_MISSING_TOTAL,
        kind: Kind::Counter,
        unit: None,
        labels: &[],
        help: "Batch writes and probes that met a time no partition of webhook_events takes (the partition is then made, or the worker pauses).",
    },
    Metric {
        name: TABLE_PARTITIONED,
        kind: Kind::Gauge,
        unit: None,
        labels: &[],
        help: "1 while webhook_events is partitioned by received_at, 0 while it is the flat table.",
    },
    Metric {
        name: PARTITIONS_AHEAD_SECONDS,
        kind: Kind::Gauge,
        unit: Some(Unit::Seconds),
        labels: &[],
        help: "Time from now to the end of the range the partitions cover without a gap; 0 when the current partition is missing.",
    },
    Metric {
        name: PARTITIONS_OLDEST_AGE_SECONDS,
        kind: Kind::Gauge,
        unit: Some(Unit::Seconds),
        labels: &[],
        help: "Age of the lower bound of the oldest partition.",
    },
    Metric {
        name: RETENTION_SECONDS,
        kind: Kind::Gauge,
        unit: Some(Unit::Seconds),
        labels: &[],
        help: "The RETENTION the latest worker maintain applied; 0 for none.",
    },
    Metric {
        name: MAINTENANCE_LAST_SUCCESS,
        kind: Kind::Gauge,
        unit: Some(Unit::Seconds),
        labels: &[],
        help: "When worker maintain last finished without error, as a Unix time; absent before the first.",
    },
];
