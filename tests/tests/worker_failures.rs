//! The worker when things go wrong, against real LocalStack and PostgreSQL: poison goes to
//! the DLQ at once, a row the database refuses goes there too without holding back its
//! batch, a slow write is not delivered twice thanks to the heartbeat, and `redrive` brings
//! DLQ messages back.

use std::time::Duration;

use e2e_tests::probes::WAIT_ON_LOCKS;
use e2e_tests::report::counter;
use e2e_tests::{QueueOptions, TestStack};
use webhook_shared::envelope::Envelope;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_goes_to_the_dlq_at_once_and_the_rest_are_stored() {
    // Redrive alone would take 3 receives x 30 s to move poison; the worker moves it at once.
    let stack = TestStack::with_queues(
        "poison",
        QueueOptions {
            max_receive_count: 3,
            visibility_timeout: 30,
            fifo: false,
        },
    )
    .await;
    let mut unknown_version: serde_json::Value =
        serde_json::from_str(&TestStack::envelopes("x", 1)[0].to_json()).expect("JSON");
    unknown_version["v"] = 99.into();
    let poison = vec![
        "not json".to_owned(),
        r#"{"v":1}"#.to_owned(),
        unknown_version.to_string(),
        // A reason quoting this is cut inside a 3-byte character at 256 bytes: it used to
        // panic the task every receive.
        format!(r#"{{"v":"{}"}}"#, "€".repeat(100)),
    ];
    stack.send_raw(&stack.queue_url, poison.clone()).await;
    let good = stack.preload(30).await;
    let worker = stack.spawn_worker(&[]).await;

    stack
        .wait_for_rows(good.len() as i64, Duration::from_secs(30))
        .await;
    stack
        .wait_for_empty(&stack.queue_url, Duration::from_secs(10))
        .await;
    let output = stack
        .sqs
        .receive_message()
        .queue_url(&stack.dlq_url)
        .max_number_of_messages(10)
        .message_attribute_names("All")
        .send()
        .await
        .expect("ReceiveMessage from the DLQ");
    let mut in_dlq: Vec<String> = output
        .messages()
        .iter()
        .filter_map(|m| m.body().map(str::to_owned))
        .collect();
    in_dlq.sort();
    let mut expected = poison;
    expected.sort();
    assert_eq!(
        in_dlq, expected,
        "exactly the poison messages, bodies intact"
    );
    assert!(
        output.messages().iter().all(|m| m
            .message_attributes()
            .and_then(|a| a.get("poison_reason")?.string_value())
            .is_some_and(|reason| !reason.is_empty() && reason.len() <= 256)),
        "each carries its reason, at most 256 bytes"
    );
    let metrics = worker.metrics().await;
    assert_eq!(
        counter(
            &metrics,
            "webhook_worker_messages_total",
            &[r#"outcome="poison""#]
        ),
        4.0
    );
    drop(worker);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_database_refuses_goes_to_the_dlq_after_its_quarantine_and_the_rest_are_stored() {
    let stack = TestStack::with_queues(
        "refused-row",
        QueueOptions {
            max_receive_count: 2,
            visibility_timeout: 10,
            fifo: false,
        },
    )
    .await;
    sqlx::query(
        "ALTER TABLE webhook_events ADD CONSTRAINT refuse_one_source CHECK (source <> 'refused')",
    )
    .execute(&stack.db)
    .await
    .expect("adding the constraint");
    let mut envelopes: Vec<Envelope> = TestStack::envelopes("accepted", 9);
    envelopes.insert(4, TestStack::envelopes("refused", 1).remove(0));
    stack
        .send_raw(
            &stack.queue_url,
            envelopes.iter().map(Envelope::to_json).collect(),
        )
        .await;
    let worker = stack
        .spawn_worker(&[("RETRY_BACKOFF_BASE_SECONDS", "1")])
        .await;

    stack.wait_for_rows(9, Duration::from_secs(20)).await;
    // The refused one goes to the DLQ with the database's reason once the refusal fuse's 10 s
    // window has passed without many more refused alike, held (not retried) meanwhile.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(18);
    while stack.messages_in(&stack.dlq_url).await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refused message never reached the DLQ:\n{}",
            worker.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let output = stack
        .sqs
        .receive_message()
        .queue_url(&stack.dlq_url)
        .message_attribute_names("All")
        .send()
        .await
        .expect("ReceiveMessage from the DLQ");
    let refused = &output.messages()[0];
    let envelope = Envelope::from_json(refused.body().unwrap_or_default()).expect("an envelope");
    assert_eq!(envelope.source, "refused");
    let reason = refused
        .message_attributes()
        .and_then(|a| a.get("poison_reason")?.string_value())
        .unwrap_or_default();
    assert!(reason.contains("refuse_one_source"), "{reason}");
    let stored_sources: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT source FROM webhook_events")
            .fetch_all(&stack.db)
            .await
            .expect("rows");
    assert_eq!(stored_sources, vec!["accepted".to_owned()]);
    assert_eq!(stack.stored_count().await, 9);
    let metrics = worker.metrics().await;
    assert_eq!(
        counter(
            &metrics,
            "webhook_worker_messages_total",
            &[r#"outcome="refused""#]
        ),
        1.0
    );
    assert_eq!(
        counter(
            &metrics,
            "webhook_worker_messages_total",
            &[r#"outcome="retried""#]
        ),
        0.0
    );
    drop(worker);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_write_is_not_delivered_twice_thanks_to_the_heartbeat() {
    let stack = TestStack::with_queues(
        "heartbeat",
        QueueOptions {
            max_receive_count: 10,
            visibility_timeout: 3,
            fifo: false,
        },
    )
    .await;
    // Hold the table so the worker's insert waits well past the visibility timeout.
    let mut lock = stack.db.begin().await.expect("BEGIN");
    sqlx::query("LOCK TABLE webhook_events IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("LOCK");
    stack.preload(1).await;
    let worker = stack
        .spawn_worker(&[WAIT_ON_LOCKS.as_slice(), &[("WORKER_CONCURRENCY", "4")]].concat())
        .await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    lock.rollback().await.expect("ROLLBACK releases the lock");

    stack.wait_for_rows(1, Duration::from_secs(20)).await;
    stack
        .wait_for_empty(&stack.queue_url, Duration::from_secs(20))
        .await;
    let metrics = worker.metrics().await;
    assert!(
        counter(&metrics, "webhook_worker_heartbeats_total", &[]) >= 2.0,
        "{metrics}"
    );
    assert_eq!(
        counter(
            &metrics,
            "webhook_worker_messages_total",
            &[r#"outcome="duplicate""#]
        ),
        0.0,
        "delivered twice:\n{metrics}"
    );
    assert_eq!(
        counter(
            &metrics,
            "webhook_worker_messages_total",
            &[r#"outcome="stored""#]
        ),
        1.0
    );
    drop(worker);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_moves_dlq_messages_back_and_they_are_stored() {
    let stack = TestStack::new("redrive").await;
    let envelopes = TestStack::envelopes("redriven", 12);
    stack
        .send_raw(
            &stack.dlq_url,
            envelopes.iter().map(Envelope::to_json).collect(),
        )
        .await;

    let (status, output) = stack
        .run_worker_command(&["redrive", "--max-per-second", "100"], &[])
        .await;
    assert!(status.success(), "redrive failed:\n{output}");
    assert!(
        output.contains("COMPLETED"),
        "progress ends with the final status:\n{output}"
    );
    assert_eq!(stack.messages_in(&stack.dlq_url).await, 0);

    let worker = stack.spawn_worker(&[]).await;
    stack.wait_for_rows(12, Duration::from_secs(30)).await;
    let mut stored: Vec<String> = sqlx::query_scalar("SELECT id FROM webhook_events")
        .fetch_all(&stack.db)
        .await
        .expect("ids");
    stored.sort();
    let mut expected: Vec<String> = envelopes.into_iter().map(|e| e.id).collect();
    expected.sort();
    assert_eq!(stored, expected);
    drop(worker);
    stack.cleanup().await;
}
