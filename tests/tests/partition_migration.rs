//! `worker migrate-partitions` against real PostgreSQL and LocalStack: an earlier version's
//! flat table of 1,000,000 rows becomes partitioned while a worker stores a steady stream;
//! the run stopped after the backfill goes on where it stopped; every streamed webhook is
//! stored once, nothing is dead-lettered, the swap pauses writes for under two seconds, and
//! a provider's retry of an old event is still a duplicate afterwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use e2e_tests::TestStack;
use e2e_tests::partitions::wait_for_outcome;
use e2e_tests::probes::DRAIN_TIMEOUT;
use webhook_shared::envelope::Envelope;

/// Rows in the old table.
const OLD_ROWS: i64 = 1_000_000;

/// The first version's table, filled with `OLD_ROWS` rows received 20 to 8 days ago.
async fn flat_table(stack: &TestStack) {
    for statement in [
        "DROP TABLE webhook_events",
        "CREATE TABLE webhook_events (
             source text NOT NULL, id text NOT NULL, received_at timestamptz NOT NULL,
             stored_at timestamptz NOT NULL DEFAULT now(), headers jsonb NOT NULL, content_type text,
             body bytea NOT NULL, payload jsonb)",
        "INSERT INTO webhook_events (source, id, received_at, headers, content_type, body)
         SELECT 'old', 'old-' || g, now() - interval '20 days' + g * interval '1 second', '{}',
                'application/json', convert_to(repeat('x', 100), 'UTF8')
         FROM generate_series(1, 1000000) g",
        // The keys after the rows: one sort each instead of a million index inserts, and the
        // same table as the first migration made (webhook_events_pkey, the received_at index).
        "ALTER TABLE webhook_events ADD PRIMARY KEY (source, id)",
        "CREATE INDEX webhook_events_received_at_idx ON webhook_events (received_at)",
        "ANALYZE webhook_events",
    ] {
        sqlx::query(statement)
            .execute(&stack.db)
            .await
            .unwrap_or_else(|error| panic!("{statement}: {error}"));
    }
}

/// Sends 50 webhooks a second (5 batches of 10) until `stop`; returns their ids.
async fn stream(stack: Arc<TestStack>, stop: Arc<AtomicBool>) -> Vec<String> {
    let mut ids = Vec::new();
    let mut ticks = tokio::time::interval(Duration::from_millis(200));
    while !stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        let envelopes = TestStack::envelopes("stream", 10);
        ids.extend(envelopes.iter().map(|e| e.id.clone()));
        stack
            .send_raw(
                &stack.queue_url,
                envelopes.iter().map(Envelope::to_json).collect(),
            )
            .await;
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_row_table_is_partitioned_while_the_worker_writes() {
    let stack = Arc::new(TestStack::new("partition-migration").await);
    flat_table(&stack).await;
    let worker = stack.spawn_worker(&[]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let streaming = tokio::spawn(stream(Arc::clone(&stack), Arc::clone(&stop)));

    let (status, log) = stack
        .run_worker_command(&["migrate-partitions", "--stop-after", "backfill"], &[])
        .await;
    assert!(status.success(), "the backfill failed: {log}");
    let step: String = sqlx::query_scalar("SELECT step FROM webhook_partition_migration")
        .fetch_one(&stack.db)
        .await
        .expect("reading the state");
    assert_eq!(step, "indexes", "stopped after the backfill");
    let keys: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_event_keys WHERE source = 'old'")
            .fetch_one(&stack.db)
            .await
            .expect("counting keys");
    assert_eq!(
        keys, OLD_ROWS,
        "every old row within the horizon has its key"
    );

    let (status, log) = stack.run_worker_command(&["migrate-partitions"], &[]).await;
    assert!(status.success(), "the migration failed: {log}");
    let pause = log
        .lines()
        .find(|line| line.contains("swapped"))
        .and_then(|line| line.split("pause=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the swap's pause in the log: {log}"))
        .to_owned();
    let pause_ms = if let Some(ms) = pause.strip_suffix("ms") {
        ms.parse::<f64>().unwrap_or(f64::MAX)
    } else if let Some(us) = pause.strip_suffix("µs") {
        us.parse::<f64>().unwrap_or(f64::MAX) / 1000.0
    } else {
        pause
            .strip_suffix('s')
            .and_then(|s| s.parse::<f64>().ok())
            .map_or(f64::MAX, |s| s * 1000.0)
    };
    assert!(pause_ms < 2000.0, "the swap held the table for {pause}");

    // A few more seconds of stream on the partitioned table, then everything is stored once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let sent = streaming.await.expect("the stream");
    let kind: String = sqlx::query_scalar(
        "SELECT relkind::text FROM pg_class WHERE oid = 'webhook_events'::regclass",
    )
    .fetch_one(&stack.db)
    .await
    .expect("reading the kind");
    assert_eq!(kind, "p");
    let legacy_bound: String = sqlx::query_scalar(
        "SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE oid = 'webhook_events_legacy'::regclass",
    )
    .fetch_one(&stack.db)
    .await
    .expect("the legacy partition");
    assert!(
        legacy_bound.starts_with("FOR VALUES FROM (MINVALUE) TO ("),
        "{legacy_bound}"
    );

    let expected = OLD_ROWS + sent.len() as i64;
    stack.wait_for_rows(expected, DRAIN_TIMEOUT).await;
    let (streamed, distinct): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT id) FROM webhook_events WHERE source = 'stream'",
    )
    .fetch_one(&stack.db)
    .await
    .expect("counting the stream");
    assert_eq!((streamed, distinct), (sent.len() as i64, sent.len() as i64));
    assert_eq!(
        stack.messages_in(&stack.dlq_url).await,
        0,
        "nothing dead-lettered"
    );

    // A provider's retry of an old event, now in a new partition, is a duplicate.
    let mut retry = TestStack::envelopes("old", 1).remove(0);
    retry.id = "old-5".to_owned();
    stack
        .send_raw(&stack.queue_url, vec![retry.to_json()])
        .await;
    wait_for_outcome(&worker, "duplicate", 1.0).await;
    assert_eq!(stack.stored_count().await, expected);
    worker.terminate(Duration::from_secs(30)).await;
    Arc::into_inner(stack)
        .expect("the only owner")
        .cleanup()
        .await;
}
