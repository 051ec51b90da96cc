//! Probes of a running worker for the end-to-end tests: its gauges, its connections and
//! transactions in `pg_stat_activity`, the main queue's counts, a table lock to freeze its
//! writes, and the final check that a backlog was stored exactly once.

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use sqlx::{Postgres, Transaction};

use crate::{Service, TestStack, eventually};

/// `application_name` of the worker's database connections.
pub const WORKER_APP: &str = "scalable-webhook-worker";
/// Longest a whole backlog may take to be stored (slow debug builds on small machines).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// The sum of the samples of gauge `name` (exactly that name) whose labels contain every
/// filter; `None` while the worker has not set any.
pub fn gauge(metrics: &str, name: &str, filters: &[&str]) -> Option<f64> {
    let values: Vec<f64> = metrics
        .lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
                && filters.iter().all(|filter| line.contains(filter))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// The three `webhook_queue_messages` states of the main queue, once all are reported.
pub fn main_queue_states(metrics: &str) -> Option<[f64; 3]> {
    let state = |state: &str| {
        gauge(
            metrics,
            "webhook_queue_messages",
            &[r#"queue="main""#, &format!(r#"state="{state}""#)],
        )
    };
    Some([state("visible")?, state("in_flight")?, state("delayed")?])
}

/// The worker's database connections from `pg_stat_activity`; only those waiting for a
/// `wait_event_type` (e.g. `Lock`) unless that is empty.
pub async fn worker_connections(stack: &TestStack, waiting_for: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
         AND application_name = $1 AND ($2 = '' OR wait_event_type = $2)",
    )
    .bind(WORKER_APP)
    .bind(waiting_for)
    .fetch_one(&stack.db)
    .await
    .expect("reading pg_stat_activity")
}

/// The worker's connections, and those inside a transaction, from `pg_stat_activity`.
pub async fn worker_activity(stack: &TestStack) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*), count(xact_start) FROM pg_stat_activity
         WHERE datname = current_database() AND application_name = $1",
    )
    .bind(WORKER_APP)
    .fetch_one(&stack.db)
    .await
    .expect("reading pg_stat_activity")
}

/// Visible and not visible (received, neither deleted nor released) main-queue messages.
pub async fn main_queue_counts(stack: &TestStack) -> (u64, u64) {
    let output = stack
        .sqs
        .get_queue_attributes()
        .queue_url(&stack.queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .expect("GetQueueAttributes");
    let count = |name| {
        output
            .attributes()
            .and_then(|attributes| attributes.get(&name)?.parse().ok())
            .expect("message counts")
    };
    (
        count(QueueAttributeName::ApproximateNumberOfMessages),
        count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    )
}

/// Worker settings under which its writes wait behind a table lock, as a slow database would
/// make them (no lock or statement timeout, a call deadline of 10 min): for tests that use
/// [`lock_table`] to slow writes down. With the defaults a lock held past 1 s pauses the
/// worker instead (see `tests/tests/worker_faults.rs`).
pub const WAIT_ON_LOCKS: [(&str, &str); 3] = [
    ("DATABASE_LOCK_TIMEOUT_MS", "0"),
    ("DATABASE_STATEMENT_TIMEOUT_MS", "0"),
    ("DATABASE_TRANSACTION_TIMEOUT_MS", "600000"),
];

/// Opens a transaction holding `webhook_events` in ACCESS EXCLUSIVE mode: every insert
/// (and every read from other connections) waits until it ends.
pub async fn lock_table(stack: &TestStack) -> Transaction<'static, Postgres> {
    let mut lock = stack.db.begin().await.expect("BEGIN");
    sqlx::query("LOCK TABLE webhook_events IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("LOCK TABLE");
    lock
}

/// Highest values seen while sampling.
#[derive(Debug, Default)]
pub struct Peaks {
    /// Samples taken.
    pub samples: u32,
    /// Most worker connections.
    pub connections: i64,
    /// Most worker connections inside a transaction.
    pub transactions: i64,
    /// Most messages held (`webhook_worker_in_flight`).
    pub in_flight: f64,
    /// Most batch writes in progress (`webhook_worker_writes_in_progress`).
    pub writes: f64,
}

/// Samples the worker's connections and open transactions (`pg_stat_activity`) and its held
/// and writes gauges every ~10-20 ms until `rows` rows are stored; returns the peaks. Panics
/// after `timeout`.
pub async fn sample_until_stored(
    stack: &TestStack,
    worker: &Service,
    rows: i64,
    timeout: Duration,
) -> Peaks {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut peaks = Peaks::default();
    loop {
        let (activity, metrics, stored) = tokio::join!(
            worker_activity(stack),
            worker.metrics(),
            stack.stored_count()
        );
        let in_flight = gauge(&metrics, "webhook_worker_in_flight", &[]).unwrap_or(0.0);
        let writes = gauge(&metrics, "webhook_worker_writes_in_progress", &[]).unwrap_or(0.0);
        peaks.samples += 1;
        peaks.connections = peaks.connections.max(activity.0);
        peaks.transactions = peaks.transactions.max(activity.1);
        peaks.in_flight = peaks.in_flight.max(in_flight);
        peaks.writes = peaks.writes.max(writes);
        if stored >= rows {
            return peaks;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {stored} of {rows} rows after {timeout:?} (peaks so far {peaks:?}):\n{}",
            worker.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits for every id to be stored, then checks the table holds exactly those ids, each
/// once, that the main queue empties and that nothing went to the DLQ.
pub async fn assert_stored_exactly(stack: &TestStack, ids: &[String]) {
    stack.wait_for_rows(ids.len() as i64, DRAIN_TIMEOUT).await;
    let stored: Vec<String> = sqlx::query_scalar("SELECT id FROM webhook_events")
        .fetch_all(&stack.db)
        .await
        .expect("reading ids");
    let stored_set: BTreeSet<&String> = stored.iter().collect();
    let expected: BTreeSet<&String> = ids.iter().collect();
    let missing: Vec<_> = expected.difference(&stored_set).take(5).collect();
    let extra: Vec<_> = stored_set.difference(&expected).take(5).collect();
    assert!(
        stored.len() == ids.len() && missing.is_empty() && extra.is_empty(),
        "{} rows for {} ids; missing e.g. {missing:?}; unexpected e.g. {extra:?}",
        stored.len(),
        ids.len()
    );
    stack
        .wait_for_empty(&stack.queue_url, Duration::from_secs(30))
        .await;
    assert_eq!(
        stack.messages_in(&stack.dlq_url).await,
        0,
        "messages in the DLQ"
    );
}

/// Polls the worker's `/metrics` until `check` holds; panics after 30 s with the last text
/// (what is awaited takes a second or two; the rest is room for a loaded CI machine).
pub async fn wait_for_metrics(worker: &Service, what: &str, check: impl Fn(&str) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = worker.metrics().await;
        if check(&metrics) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not reached within 30 s; last /metrics:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until at least `rows` rows are stored, polling often; returns the count seen.
pub async fn wait_for_some_rows(stack: &TestStack, rows: i64) -> i64 {
    eventually(Duration::from_secs(60), "first rows stored", || async {
        let stored = stack.stored_count().await;
        Ok((stored >= rows).then_some(stored))
    })
    .await
    .expect("the worker stores rows")
}

/// Makes every row insert of `webhook_events` take `seconds` (a trigger with `pg_sleep`), so
/// the database is the bottleneck or concurrent writes interleave row by row.
pub async fn slow_inserts(stack: &TestStack, seconds: f64) {
    for statement in [
        format!(
            "CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql
             AS $$ BEGIN PERFORM pg_sleep({seconds}); RETURN NEW; END $$"
        ),
        "CREATE TRIGGER slow_insert BEFORE INSERT ON webhook_events
         FOR EACH ROW EXECUTE FUNCTION slow_insert()"
            .to_owned(),
    ] {
        sqlx::query(&statement)
            .execute(&stack.db)
            .await
            .expect("creating the slow-insert trigger");
    }
}
