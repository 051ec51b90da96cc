//! Writing against the real PostgreSQL: two batches that hold the same events in opposite
//! order never deadlock (rows go in key order) and store each once (the second's plain
//! inserts fail on the first's keys and its sorting statement finds them); a batch that
//! mixes stored and new events, or repeats one, stores each event once; and a queue whose
//! VisibilityTimeout is 0 still has every webhook stored once, without a duplicate delivery.

use std::time::Duration;

use e2e_tests::probes::{WAIT_ON_LOCKS, assert_stored_exactly, lock_table, slow_inserts};
use e2e_tests::report::counter;
use e2e_tests::{QueueOptions, TestStack};
use webhook_shared::envelope::Envelope;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_with_the_same_keys_in_opposite_order_do_not_deadlock() {
    let stack = TestStack::new("store-order").await;
    // Each row takes 300 ms, so two concurrent inserts interleave row by row: in receive
    // order, one would take a then wait for b while the other holds b and waits for a.
    slow_inserts(&stack, 0.3).await;
    let events: Vec<Envelope> = TestStack::envelopes("order", 3);
    let forward = events.clone();
    let backward: Vec<Envelope> = events.iter().rev().cloned().collect();
    let write = |batch: Vec<Envelope>| {
        let db = stack.db.clone();
        async move {
            let mut tx = db.begin().await?;
            let new = worker::insert_events(&mut tx, &batch).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(new)
        }
    };
    let (first, second) = tokio::join!(write(forward), write(backward));
    let (first, second) = (
        first.expect("no deadlock (40P01)"),
        second.expect("no deadlock (40P01)"),
    );
    let new = first.iter().chain(&second).filter(|new| **new).count();
    assert_eq!(new, 3, "each event new exactly once: {first:?} {second:?}");
    assert_eq!(stack.stored_count().await, 3);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_and_repeated_events_in_a_batch_are_duplicates() {
    let stack = TestStack::new("store-mixed").await;
    let events: Vec<Envelope> = TestStack::envelopes("mixed", 4);
    let write = |batch: Vec<Envelope>| {
        let db = stack.db.clone();
        async move {
            let mut tx = db.begin().await.expect("BEGIN");
            let new = worker::insert_events(&mut tx, &batch)
                .await
                .expect("insert_events");
            tx.commit().await.expect("COMMIT");
            new
        }
    };
    assert_eq!(write(events[..2].to_vec()).await, [true, true]);
    // Two stored, two new: the plain inserts fail on the first stored key, the savepoint
    // is rolled back, and the transaction goes on with the sorting statement.
    let mixed = vec![
        events[2].clone(),
        events[0].clone(),
        events[3].clone(),
        events[1].clone(),
    ];
    assert_eq!(write(mixed).await, [true, false, true, false]);
    // A provider's retry of a stored event: another received_at, the same key.
    let mut retry = events[0].clone();
    retry.received_at += chrono::Duration::seconds(5);
    let fresh = TestStack::envelopes("mixed-again", 1).remove(0);
    let repeated = vec![fresh.clone(), retry, fresh];
    assert_eq!(write(repeated).await, [true, false, false]);
    assert_eq!(stack.stored_count().await, 5);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_with_visibility_timeout_0_is_still_stored_once() {
    let options = QueueOptions {
        visibility_timeout: 0,
        max_receive_count: 10,
        ..Default::default()
    };
    let stack = TestStack::with_queues("visibility-0", options).await;
    // Writes wait a while: with the queue's 0 s visibility every held message would be
    // handed out again at once, and the heartbeat's 0 s period used to panic.
    let lock = lock_table(&stack).await;
    let ids = stack.preload(50).await;
    let worker = stack.spawn_worker(&WAIT_ON_LOCKS).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    lock.rollback().await.expect("ROLLBACK");
    assert_stored_exactly(&stack, &ids).await;
    let metrics = worker.metrics().await;
    assert_eq!(
        counter(
            &metrics,
            "webhook_worker_messages_total",
            &[r#"outcome="duplicate""#]
        ),
        0.0,
        "no message was delivered twice:\n{metrics}"
    );
    assert!(counter(&metrics, "webhook_worker_heartbeats_total", &[]) >= 50.0);
    drop(worker);
    stack.cleanup().await;
}
