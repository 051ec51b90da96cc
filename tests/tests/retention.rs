//! `worker maintain`'s retention against real PostgreSQL and LocalStack: partitions wholly
//! older than RETENTION are detached and dropped while a worker keeps writing, a detach left
//! pending by an earlier run is finished, newer partitions stay, and the run is recorded
//! for the workers' gauges.

use std::time::Duration;

use chrono::{Days, Utc};
use e2e_tests::TestStack;
use e2e_tests::probes::DRAIN_TIMEOUT;
use webhook_shared::envelope::Envelope;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintain_drops_what_retention_expires_and_finishes_a_pending_detach() {
    let stack = TestStack::new("retention").await;
    let worker = stack.spawn_worker(&[]).await;
    // Rows 100 and 95 days old (their partitions are made on demand) and of today.
    let mut envelopes = Vec::new();
    for age in [100, 95] {
        let mut old = TestStack::envelopes("old", 3);
        for envelope in &mut old {
            envelope.received_at = Utc::now() - Days::new(age);
        }
        envelopes.extend(old);
    }
    envelopes.extend(TestStack::envelopes("new", 3));
    stack
        .send_raw(
            &stack.queue_url,
            envelopes.iter().map(Envelope::to_json).collect(),
        )
        .await;
    stack.wait_for_rows(9, DRAIN_TIMEOUT).await;
    let oldest = format!(
        "webhook_events_p{}",
        (Utc::now() - Days::new(100)).format("%Y%m%d")
    );
    let older = format!(
        "webhook_events_p{}",
        (Utc::now() - Days::new(95)).format("%Y%m%d")
    );
    assert!(stack.partition_names().await.contains(&oldest));

    // An earlier run's detach, cut short by its timeout while a transaction used the table:
    // the partition stays attached, pending, and takes no writes.
    let mut reader = stack.db.begin().await.expect("a transaction");
    sqlx::query("SELECT count(*) FROM webhook_events")
        .execute(&mut *reader)
        .await
        .expect("reading");
    let mut detacher = stack.db.acquire().await.expect("a connection");
    sqlx::query("SET statement_timeout = '1s'")
        .execute(&mut *detacher)
        .await
        .expect("SET");
    let cut_short = sqlx::raw_sql(&format!(
        "ALTER TABLE webhook_events DETACH PARTITION {older} CONCURRENTLY"
    ))
    .execute(&mut *detacher)
    .await;
    assert!(
        cut_short.is_err(),
        "the detach waits for the reader and times out"
    );
    sqlx::query("RESET statement_timeout")
        .execute(&mut *detacher)
        .await
        .expect("RESET");
    drop(detacher);
    reader.rollback().await.expect("ROLLBACK");
    let pending: bool = sqlx::query_scalar(
        "SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = $1::regclass",
    )
    .bind(&older)
    .fetch_one(&stack.db)
    .await
    .expect("reading pg_inherits");
    assert!(pending, "the detach is left pending");

    // Writes go on during the run.
    let during = TestStack::envelopes("during", 20);
    stack
        .send_raw(
            &stack.queue_url,
            during.iter().map(Envelope::to_json).collect(),
        )
        .await;
    let (status, log) = stack
        .run_worker_command(&["maintain"], &[("RETENTION", "90d")])
        .await;
    assert!(status.success(), "maintain failed: {log}");
    stack.wait_for_rows(29 - 6, DRAIN_TIMEOUT).await;

    let names = stack.partition_names().await;
    assert!(
        !names.contains(&oldest) && !names.contains(&older),
        "{names:?}"
    );
    assert!(!stack.table_exists(&oldest).await, "{oldest} dropped");
    // Its log says how long the detach and the drop of each partition took.
    for message in ["partition detached", "partition dropped"] {
        let timed = log.lines().any(|line| {
            line.contains(message) && line.contains(oldest.as_str()) && line.contains("elapsed_ms=")
        });
        assert!(timed, "no timed '{message}' line for {oldest}:\n{log}");
    }
    assert!(
        !stack.table_exists(&older).await,
        "{older} finalized and dropped"
    );
    let old_rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_events WHERE source = 'old'")
            .fetch_one(&stack.db)
            .await
            .expect("counting");
    assert_eq!(old_rows, 0);
    assert_eq!(
        stack.stored_count().await,
        23,
        "today's rows and those written during the run"
    );
    let (retention_days, recorded): (f64, bool) = sqlx::query_as(
        "SELECT extract(epoch FROM retention)::float8 / 86400, last_success IS NOT NULL FROM webhook_maintenance",
    )
    .fetch_one(&stack.db)
    .await
    .expect("reading the record");
    assert!((retention_days - 90.0).abs() < 1e-6 && recorded);
    let logged: Vec<(String, String)> =
        sqlx::query_as("SELECT partition, state FROM webhook_partition_log ORDER BY 1")
            .fetch_all(&stack.db)
            .await
            .expect("reading the log");
    assert!(
        logged.contains(&(oldest.clone(), "dropped".to_owned())),
        "{logged:?}"
    );

    // A second run finds nothing to do.
    let (status, log) = stack
        .run_worker_command(&["maintain"], &[("RETENTION", "90d")])
        .await;
    assert!(status.success(), "maintain failed: {log}");
    assert!(
        log.contains("dropped: []") || log.contains("dropped=[]"),
        "{log}"
    );
    worker.terminate(Duration::from_secs(30)).await;
    stack.cleanup().await;
}
