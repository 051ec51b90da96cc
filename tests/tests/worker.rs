//! The worker binary under stress and faults, against real LocalStack and PostgreSQL: its
//! concurrency and connection limits hold under a backlog, a database outage and a SIGKILL
//! lose nothing, SIGTERM drains within the grace period, and the depth and lag gauges follow
//! a backlog up and back down to zero.

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use e2e_tests::pg_proxy::PgProxy;
use e2e_tests::report::counter;
use e2e_tests::{QueueOptions, Service, TestStack, eventually};
use nix::sys::signal::Signal;
use sqlx::{Postgres, Transaction};

/// `application_name` of the worker's database connections.
const WORKER_APP: &str = "scalable-webhook-worker";
/// Longest a whole backlog may take to be stored (slow debug builds on small machines).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// The sum of the samples of gauge `name` (exactly that name) whose labels contain every
/// filter; `None` while the worker has not set any.
fn gauge(metrics: &str, name: &str, filters: &[&str]) -> Option<f64> {
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
fn main_queue_states(metrics: &str) -> Option<[f64; 3]> {
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
async fn worker_connections(stack: &TestStack, waiting_for: &str) -> i64 {
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

/// Visible and not visible (received, neither deleted nor released) main-queue messages.
async fn main_queue_counts(stack: &TestStack) -> (u64, u64) {
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

/// Opens a transaction holding `webhook_events` in ACCESS EXCLUSIVE mode: every insert
/// (and every read from other connections) waits until it ends.
async fn lock_table(stack: &TestStack) -> Transaction<'static, Postgres> {
    let mut lock = stack.db.begin().await.expect("BEGIN");
    sqlx::query("LOCK TABLE webhook_events IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("LOCK TABLE");
    lock
}

/// Highest values seen while sampling.
#[derive(Debug, Default)]
struct Peaks {
    samples: u32,
    connections: i64,
    in_flight: f64,
}

/// Samples the worker's connections and in-flight gauge every ~10-20 ms until `rows` rows are
/// stored; returns the peaks. Panics after `timeout`.
async fn sample_until_stored(
    stack: &TestStack,
    worker: &Service,
    rows: i64,
    timeout: Duration,
) -> Peaks {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut peaks = Peaks::default();
    loop {
        let (connections, metrics, stored) = tokio::join!(
            worker_connections(stack, ""),
            worker.metrics(),
            stack.stored_count()
        );
        let in_flight = gauge(&metrics, "webhook_worker_in_flight", &[]).unwrap_or(0.0);
        peaks.samples += 1;
        peaks.connections = peaks.connections.max(connections);
        peaks.in_flight = peaks.in_flight.max(in_flight);
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
async fn assert_stored_exactly(stack: &TestStack, ids: &[String]) {
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

/// Polls the worker's `/metrics` until `check` holds; panics after 10 s with the last text.
async fn wait_for_metrics(worker: &Service, what: &str, check: impl Fn(&str) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = worker.metrics().await;
        if check(&metrics) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not reached within 10 s; last /metrics:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until at least `rows` rows are stored, polling often; returns the count seen.
async fn wait_for_some_rows(stack: &TestStack, rows: i64) -> i64 {
    eventually(Duration::from_secs(60), "first rows stored", || async {
        let stored = stack.stored_count().await;
        Ok((stored >= rows).then_some(stored))
    })
    .await
    .expect("the worker stores rows")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_and_connections_never_exceed_their_limits() {
    const MESSAGES: usize = 800;
    let stack = TestStack::new("worker-limits").await;
    // Each row takes 10 ms to insert, so the database is the bottleneck: the worker's messages
    // compete for connections, and a pool above its limit would show in pg_stat_activity.
    for statement in [
        "CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql
         AS $$ BEGIN PERFORM pg_sleep(0.01); RETURN NEW; END $$",
        "CREATE TRIGGER slow_insert BEFORE INSERT ON webhook_events
         FOR EACH ROW EXECUTE FUNCTION slow_insert()",
    ] {
        sqlx::query(statement)
            .execute(&stack.db)
            .await
            .expect("creating the slow-insert trigger");
    }
    let ids = stack.preload(MESSAGES).await;
    let worker = stack
        .spawn_worker(&[
            ("WORKER_CONCURRENCY", "6"),
            ("DATABASE_MAX_CONNECTIONS", "3"),
            // Several receive loops, so that many small batches compete for connections.
            ("RECEIVE_LOOPS", "6"),
        ])
        .await;

    let peaks = sample_until_stored(&stack, &worker, MESSAGES as i64, DRAIN_TIMEOUT).await;
    assert!(
        peaks.connections <= 3,
        "more than DATABASE_MAX_CONNECTIONS=3 connections: {peaks:?}"
    );
    assert!(
        peaks.in_flight <= 6.0,
        "more than WORKER_CONCURRENCY=6 in flight: {peaks:?}"
    );
    // The samples saw the worker busy, so the limits above were really under load.
    assert!(
        peaks.in_flight >= 2.0 && peaks.connections >= 1,
        "the samples never saw real load: {peaks:?}"
    );
    assert_stored_exactly(&stack, &ids).await;
    let metrics = worker.metrics().await;
    assert_eq!(
        counter(&metrics, "webhook_worker_messages_total", &[r#""stored""#]),
        MESSAGES as f64,
        "{metrics}"
    );
    drop(worker);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_loses_nothing() {
    const MESSAGES: usize = 300;
    let options = QueueOptions {
        max_receive_count: 50,
        visibility_timeout: 5,
        ..Default::default()
    };
    let stack = TestStack::with_queues("worker-pg-outage", options).await;
    let proxy = PgProxy::start(&stack.database_url).await;
    let ids = stack.preload(MESSAGES).await;
    let worker = stack
        .spawn_worker(&[
            ("DATABASE_URL", proxy.url()),
            ("WORKER_CONCURRENCY", "8"),
            ("DATABASE_MAX_CONNECTIONS", "4"),
            // Messages received during the outage fail fast instead of waiting it out.
            ("DATABASE_ACQUIRE_TIMEOUT_SECONDS", "2"),
        ])
        .await;

    let before = wait_for_some_rows(&stack, 1).await;
    let closed = proxy.cut().await;
    let at_cut = stack.stored_count().await;
    assert!(
        closed >= 1,
        "the worker had no connection through the proxy to cut (before {before} rows)"
    );
    assert!(
        at_cut < MESSAGES as i64,
        "the backlog was drained before the outage ({at_cut} rows); nothing was tested"
    );
    // The outage lasts a while, whatever the worker does meanwhile.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let during = stack.stored_count().await;
    proxy.restore().await;

    assert_stored_exactly(&stack, &ids).await;
    let health = reqwest::get(worker.ops_url("/healthz")).await;
    assert!(
        health.is_ok_and(|response| response.status().is_success()),
        "the worker did not survive the outage:\n{}",
        worker.log()
    );
    let metrics = worker.metrics().await;
    let retried = counter(&metrics, "webhook_worker_messages_total", &[r#""retried""#]);
    assert!(
        retried >= 1.0,
        "no message failed during the outage ({at_cut} rows at the cut, {during} at the end of it, {closed} connections cut), so it tested nothing:\n{metrics}"
    );
    drop(worker);
    drop(proxy);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_drain_then_restart_stores_everything_once() {
    const MESSAGES: usize = 1000;
    let options = QueueOptions {
        visibility_timeout: 5,
        ..Default::default()
    };
    let stack = TestStack::with_queues("worker-kill-9", options).await;
    let ids = stack.preload(MESSAGES).await;
    let worker = stack.spawn_worker(&[]).await;

    wait_for_some_rows(&stack, 20).await;
    // Kill it mid-drain while some of its writes are certainly under way (blocked behind a
    // lock), so messages it received but never committed must come back.
    let lock = lock_table(&stack).await;
    eventually(Duration::from_secs(10), "a blocked insert", || async {
        Ok((worker_connections(&stack, "Lock").await >= 1).then_some(()))
    })
    .await
    .expect("the worker writes while the table is locked");
    worker.kill().await;
    lock.rollback().await.expect("ROLLBACK");

    let worker = stack.spawn_worker(&[]).await;
    assert_stored_exactly(&stack, &ids).await;
    drop(worker);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_drain_exits_0_within_grace() {
    const MESSAGES: usize = 600;
    let options = QueueOptions {
        visibility_timeout: 5,
        ..Default::default()
    };
    let stack = TestStack::with_queues("worker-sigterm", options).await;
    let ids = stack.preload(MESSAGES).await;
    let worker = stack
        .spawn_worker(&[
            ("SHUTDOWN_GRACE_SECONDS", "5"),
            ("WORKER_CONCURRENCY", "4"),
            ("DATABASE_MAX_CONNECTIONS", "4"),
        ])
        .await;

    wait_for_some_rows(&stack, 20).await;
    // Freeze the inserts so that, when SIGTERM comes, every permit is held by a message in
    // processing and no receive or delete is under way: exactly those must be finished.
    let mut lock = lock_table(&stack).await;
    let at_signal: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_events")
        .fetch_one(&mut *lock)
        .await
        .expect("counting rows under the lock");
    let frozen = || async {
        let (visible, not_visible) = main_queue_counts(&stack).await;
        let metrics = worker.metrics().await;
        let in_flight = gauge(&metrics, "webhook_worker_in_flight", &[]).unwrap_or(0.0);
        let limit = gauge(&metrics, "webhook_worker_concurrency_limit", &[]).unwrap_or(f64::MAX);
        let deletes_done = at_signal as u64 + visible + not_visible == MESSAGES as u64;
        let all_blocked = in_flight >= 1.0 && in_flight >= limit && not_visible as f64 == in_flight;
        Ok((deletes_done && all_blocked).then_some(not_visible as i64))
    };
    let in_processing = eventually(Duration::from_secs(10), "worker frozen", frozen)
        .await
        .expect("every permit held by a message blocked on the lock");
    worker.signal(Signal::SIGTERM);
    // The database comes back well within the grace period, after the worker has seen
    // the signal (it must stop receiving at once).
    tokio::time::sleep(Duration::from_secs(1)).await;
    lock.rollback().await.expect("ROLLBACK");
    let status = worker.wait(Duration::from_secs(8)).await;
    assert!(
        status.success(),
        "worker exited with {status} after SIGTERM"
    );
    let at_exit = stack.stored_count().await;
    assert_eq!(
        at_exit - at_signal,
        in_processing,
        "after SIGTERM the worker must finish the {in_processing} messages in processing and take no more"
    );
    assert_eq!(
        main_queue_counts(&stack).await.1,
        0,
        "messages received but left unfinished at exit"
    );

    let worker = stack.spawn_worker(&[]).await;
    assert_stored_exactly(&stack, &ids).await;
    drop(worker);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depth_and_lag_metrics_track_a_backlog() {
    const MESSAGES: usize = 300;
    let stack = TestStack::new("worker-depth-lag").await;
    // Inserts block behind this lock until it is rolled back: a backlog without stopping
    // anything.
    let lock = lock_table(&stack).await;
    let ids = stack.preload(MESSAGES).await;
    let worker = stack.spawn_worker(&[("WORKER_CONCURRENCY", "2")]).await;

    let sum_is_backlog = |metrics: &str| {
        main_queue_states(metrics)
            .is_some_and(|states| states.iter().sum::<f64>() == MESSAGES as f64)
    };
    wait_for_metrics(
        &worker,
        "main queue visible+in_flight+delayed = 300",
        sum_is_backlog,
    )
    .await;
    let lag = |metrics: &str| gauge(metrics, "webhook_worker_lag_seconds", &[]);
    wait_for_metrics(&worker, "lag > 0", |m| lag(m).is_some_and(|lag| lag > 0.0)).await;
    wait_for_metrics(&worker, "lag >= 1 s", |m| {
        lag(m).is_some_and(|lag| lag >= 1.0)
    })
    .await;

    lock.rollback().await.expect("ROLLBACK");
    assert_stored_exactly(&stack, &ids).await;
    wait_for_metrics(&worker, "main queue gauges and lag back to 0", |m| {
        main_queue_states(m) == Some([0.0; 3]) && lag(m) == Some(0.0)
    })
    .await;
    drop(worker);
    stack.cleanup().await;
}
