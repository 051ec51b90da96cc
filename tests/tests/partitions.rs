//! Time partitions of `webhook_events` against real PostgreSQL and LocalStack: `worker
//! migrate` makes them ahead and the worker reports them; a row no partition takes gets its
//! partition made on demand (never the DLQ), unless it lies beyond the range kept ready; a
//! worker whose role may not create partitions pauses until `worker maintain` makes them;
//! and a provider's retry is a duplicate across a partition boundary.

use std::time::Duration;

use chrono::{DateTime, Days, Utc};
use e2e_tests::partitions::wait_for_outcome;
use e2e_tests::probes::{DRAIN_TIMEOUT, gauge};
use e2e_tests::report::counter;
use e2e_tests::{TestStack, eventually, worker_role};
use webhook_shared::envelope::Envelope;

/// One envelope of `source` with id `id`, received at `at`, body `body`.
fn envelope(source: &str, id: &str, at: DateTime<Utc>, body: &str) -> Envelope {
    let mut envelope = TestStack::envelopes(source, 1).remove(0);
    envelope.id = id.to_owned();
    envelope.received_at = at;
    envelope.body = bytes::Bytes::from(body.to_owned());
    envelope
}

/// The start of today (UTC) plus `days`.
fn midnight(days: i64) -> DateTime<Utc> {
    let today = Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap_or_default()
        .and_utc();
    if days >= 0 {
        today + Days::new(days as u64)
    } else {
        today - Days::new(days.unsigned_abs())
    }
}

async fn rows_of(stack: &TestStack, id: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT convert_from(body, 'UTF8') FROM webhook_events WHERE id = $1 ORDER BY received_at",
    )
    .bind(id)
    .fetch_all(&stack.db)
    .await
    .expect("reading rows")
}

async fn send(stack: &TestStack, envelopes: &[Envelope]) {
    stack
        .send_raw(
            &stack.queue_url,
            envelopes.iter().map(Envelope::to_json).collect(),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_partitions_the_table_ahead_and_the_worker_reports_it() {
    let stack = TestStack::new("partitions-ahead").await;
    let kind: String = sqlx::query_scalar(
        "SELECT relkind::text FROM pg_class WHERE oid = 'webhook_events'::regclass",
    )
    .fetch_one(&stack.db)
    .await
    .expect("reading the table's kind");
    assert_eq!(kind, "p", "webhook_events is partitioned");
    // Daily by default: today and three ahead.
    let expected: Vec<String> = (0..4)
        .map(|day| format!("webhook_events_p{}", midnight(day).format("%Y%m%d")))
        .collect();
    assert_eq!(stack.partition_names().await, expected);

    let worker = stack.spawn_worker(&[]).await;
    let ids = stack.preload(5).await;
    stack.wait_for_rows(5, DRAIN_TIMEOUT).await;
    let metrics = eventually(Duration::from_secs(30), "the partition gauges", || async {
        let metrics = worker.metrics().await;
        Ok(gauge(&metrics, "webhook_partitions_ahead_seconds", &[]).map(|_| metrics))
    })
    .await
    .expect("the gauges are set");
    assert_eq!(gauge(&metrics, "webhook_table_partitioned", &[]), Some(1.0));
    let ahead = gauge(&metrics, "webhook_partitions_ahead_seconds", &[]).unwrap_or_default();
    assert!(
        ahead > 3.0 * 86_400.0 && ahead <= 4.0 * 86_400.0,
        "covered {ahead} s ahead"
    );
    assert_eq!(gauge(&metrics, "webhook_retention_seconds", &[]), Some(0.0));
    assert_eq!(ids.len(), 5);
    worker.terminate(Duration::from_secs(30)).await;
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_partition_is_made_on_demand_and_a_far_future_time_is_refused() {
    let stack = TestStack::new("partitions-on-demand").await;
    let past = Utc::now() - Days::new(20);
    let far_future = Utc::now() + Days::new(400);
    let mut envelopes = vec![
        envelope("late", "from-the-past", past, r#"{"when":"past"}"#),
        envelope(
            "clock",
            "from-the-future",
            far_future,
            r#"{"when":"future"}"#,
        ),
    ];
    envelopes.extend(TestStack::envelopes("now", 3));
    send(&stack, &envelopes).await;
    let worker = stack.spawn_worker(&[]).await;

    stack.wait_for_rows(4, DRAIN_TIMEOUT).await;
    let in_dlq = eventually(
        Duration::from_secs(60),
        "the far-future event in the DLQ",
        || async {
            let ids = stack.event_ids_in(&stack.dlq_url).await;
            Ok((!ids.is_empty()).then_some(ids))
        },
    )
    .await
    .expect("the DLQ gets it");
    assert_eq!(in_dlq, ["from-the-future"]);
    assert_eq!(rows_of(&stack, "from-the-past").await.len(), 1);
    let past_partition = format!("webhook_events_p{}", past.format("%Y%m%d"));
    assert!(
        stack.partition_names().await.contains(&past_partition),
        "{past_partition} was made"
    );
    let metrics = worker.metrics().await;
    assert!(counter(&metrics, "webhook_worker_partition_missing_total", &[]) >= 2.0);
    assert!(worker.log().contains("beyond the partitions"));
    worker.terminate(Duration::from_secs(30)).await;
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_may_not_create_partitions_pauses_until_maintain_makes_them() {
    let stack = TestStack::new("partitions-not-owner").await;
    let tomorrow = format!("webhook_events_p{}", midnight(1).format("%Y%m%d"));
    for statement in [
        format!("ALTER TABLE webhook_events DETACH PARTITION {tomorrow}"),
        format!("DROP TABLE {tomorrow}"),
    ] {
        sqlx::query(&statement)
            .execute(&stack.db)
            .await
            .expect("dropping tomorrow's partition");
    }
    let role = stack.create_worker_role().await.expect("a worker role");
    let url = worker_role::with_user(&stack.database_url, &role).expect("a URL");
    let worker = stack.spawn_worker(&[("DATABASE_URL", &url)]).await;
    let noon_tomorrow = midnight(1) + chrono::Duration::hours(12);
    send(
        &stack,
        &[envelope("early", "tomorrow", noon_tomorrow, "{}")],
    )
    .await;
    eventually(
        Duration::from_secs(60),
        "the worker to meet the missing partition",
        || async {
            let metrics = worker.metrics().await;
            Ok(
                (counter(&metrics, "webhook_worker_partition_missing_total", &[]) >= 1.0)
                    .then_some(()),
            )
        },
    )
    .await
    .expect("the worker counts the missing partition");
    assert_eq!(stack.stored_count().await, 0);
    assert!(
        worker.log().contains("could not be made"),
        "the worker says why it pauses"
    );

    let (status, log) = stack.run_worker_command(&["maintain"], &[]).await;
    assert!(status.success(), "maintain failed: {log}");
    assert!(stack.partition_names().await.contains(&tomorrow));
    stack.wait_for_rows(1, DRAIN_TIMEOUT).await;
    assert_eq!(rows_of(&stack, "tomorrow").await.len(), 1);
    assert_eq!(
        stack.messages_in(&stack.dlq_url).await,
        0,
        "nothing dead-lettered"
    );
    worker.terminate(Duration::from_secs(30)).await;
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_retry_is_a_duplicate_across_a_partition_boundary_within_the_horizon() {
    let stack = TestStack::new("partitions-dedup").await;
    let worker = stack.spawn_worker(&[]).await;
    let boundary = midnight(1);
    let before = envelope(
        "github",
        "delivery-1",
        boundary - chrono::Duration::milliseconds(100),
        "first",
    );
    let retry = envelope(
        "github",
        "delivery-1",
        boundary + chrono::Duration::milliseconds(100),
        "retry",
    );
    send(&stack, std::slice::from_ref(&before)).await;
    stack.wait_for_rows(1, DRAIN_TIMEOUT).await;
    send(&stack, std::slice::from_ref(&retry)).await;
    wait_for_outcome(&worker, "duplicate", 1.0).await;
    assert_eq!(rows_of(&stack, "delivery-1").await, ["first"]);

    // Past the horizon the key is gone: the same message again is still one row (same
    // received_at, same partition), but a retry with a new time is stored again.
    let old = envelope("github", "delivery-2", Utc::now() - Days::new(3), "old");
    send(&stack, std::slice::from_ref(&old)).await;
    stack.wait_for_rows(2, DRAIN_TIMEOUT).await;
    let (status, log) = stack
        .run_worker_command(&["maintain"], &[("DEDUP_HORIZON", "2d")])
        .await;
    assert!(status.success(), "maintain failed: {log}");
    let keys: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_event_keys WHERE id = 'delivery-2'")
            .fetch_one(&stack.db)
            .await
            .expect("counting keys");
    assert_eq!(keys, 0, "the key past DEDUP_HORIZON was trimmed");
    send(&stack, std::slice::from_ref(&old)).await;
    wait_for_outcome(&worker, "duplicate", 2.0).await;
    assert_eq!(rows_of(&stack, "delivery-2").await, ["old"]);
    // The redelivery wrote the key again (with its own, old, received_at): the next run
    // trims it again, and then a retry with a new time is a new row.
    let (status, log) = stack
        .run_worker_command(&["maintain"], &[("DEDUP_HORIZON", "2d")])
        .await;
    assert!(status.success(), "maintain failed: {log}");
    let late_retry = envelope("github", "delivery-2", Utc::now(), "late retry");
    send(&stack, std::slice::from_ref(&late_retry)).await;
    stack.wait_for_rows(3, DRAIN_TIMEOUT).await;
    assert_eq!(rows_of(&stack, "delivery-2").await, ["old", "late retry"]);
    worker.terminate(Duration::from_secs(30)).await;
    stack.cleanup().await;
}
