//! The worker's shutdown against real LocalStack and PostgreSQL: SIGTERM stops receiving at
//! once and finishes what the worker holds; messages a long poll brings after the signal are
//! released at once; past the grace period, what is still blocked is released and the worker
//! exits 0 instead of waiting to be killed.

use std::time::Duration;

use e2e_tests::probes::{
    WAIT_ON_LOCKS, assert_stored_exactly, gauge, lock_table, main_queue_counts, wait_for_some_rows,
};
use e2e_tests::{QueueOptions, TestStack, eventually};
use nix::sys::signal::Signal;

/// WORKER_MAX_IN_FLIGHT of these tests: small, so the window fills while writes are frozen
/// (full: less room than one receive of 10).
const WINDOW: u64 = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_drain_finishes_what_it_holds_and_exits_0() {
    const MESSAGES: usize = 600;
    let options = QueueOptions {
        visibility_timeout: 5,
        ..Default::default()
    };
    let stack = TestStack::with_queues("worker-sigterm", options).await;
    let ids = stack.preload(MESSAGES).await;
    let window = WINDOW.to_string();
    let worker = stack
        .spawn_worker(
            &[
                WAIT_ON_LOCKS.as_slice(),
                &[
                    ("SHUTDOWN_GRACE_SECONDS", "5"),
                    ("WORKER_MAX_IN_FLIGHT", &window),
                ],
            ]
            .concat(),
        )
        .await;

    wait_for_some_rows(&stack, 20).await;
    // Freeze the inserts so that, when SIGTERM comes, the window is full of held messages
    // and no receive or delete is under way: exactly those must be finished.
    let mut lock = lock_table(&stack).await;
    let at_signal: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_events")
        .fetch_one(&mut *lock)
        .await
        .expect("counting rows under the lock");
    let frozen = || async {
        let (visible, not_visible) = main_queue_counts(&stack).await;
        let metrics = worker.metrics().await;
        let held = gauge(&metrics, "webhook_worker_in_flight", &[]).unwrap_or(0.0);
        let deletes_done = at_signal as u64 + visible + not_visible == MESSAGES as u64;
        // Full: no room for another receive of 10 (a receive may bring fewer than 10).
        let window_full = held > (WINDOW - 10) as f64 && not_visible as f64 == held;
        Ok((deletes_done && window_full).then_some(not_visible as i64))
    };
    let held = eventually(Duration::from_secs(10), "worker frozen", frozen)
        .await
        .expect("the window full of messages blocked on the lock");
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
        held,
        "after SIGTERM the worker must finish the {held} messages it held and take no more"
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
async fn messages_a_long_poll_brings_after_sigterm_are_released_at_once() {
    // A visibility timeout far longer than the test: a message left hidden would show.
    let options = QueueOptions {
        visibility_timeout: 600,
        ..Default::default()
    };
    let stack = TestStack::with_queues("worker-sigterm-poll", options).await;
    let worker = stack
        .spawn_worker(&[("SHUTDOWN_GRACE_SECONDS", "25")])
        .await;
    // The queue is empty: the worker sits in a long poll.
    tokio::time::sleep(Duration::from_secs(2)).await;
    worker.signal(Signal::SIGTERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ids = stack.preload(3).await;
    let status = worker.wait(Duration::from_secs(24)).await;
    assert!(
        status.success(),
        "worker exited with {status} after SIGTERM"
    );
    assert_eq!(
        stack.stored_count().await,
        0,
        "nothing taken after the signal"
    );
    assert_eq!(
        main_queue_counts(&stack).await,
        (3, 0),
        "what the poll brought is visible again at once"
    );

    let worker = stack.spawn_worker(&[]).await;
    assert_stored_exactly(&stack, &ids).await;
    drop(worker);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_grace_period_held_messages_are_released_and_the_worker_exits_0() {
    let options = QueueOptions {
        visibility_timeout: 600,
        ..Default::default()
    };
    let stack = TestStack::with_queues("worker-grace", options).await;
    let lock = lock_table(&stack).await;
    let ids = stack.preload(100).await;
    let window = WINDOW.to_string();
    let worker = stack
        .spawn_worker(
            &[
                WAIT_ON_LOCKS.as_slice(),
                &[
                    ("SHUTDOWN_GRACE_SECONDS", "2"),
                    ("WORKER_MAX_IN_FLIGHT", &window),
                ],
            ]
            .concat(),
        )
        .await;
    eventually(Duration::from_secs(10), "the window full", || async {
        let held = gauge(&worker.metrics().await, "webhook_worker_in_flight", &[]);
        let (_, not_visible) = main_queue_counts(&stack).await;
        let full =
            held.is_some_and(|held| held > (WINDOW - 10) as f64 && held == not_visible as f64);
        Ok(full.then_some(()))
    })
    .await
    .expect("the worker holds a full window blocked on the lock");
    worker.signal(Signal::SIGTERM);
    // Grace (2 s) plus the release; far less than the database stays locked.
    let status = worker.wait(Duration::from_secs(9)).await;
    assert!(
        status.success(),
        "worker exited with {status} after SIGTERM"
    );
    assert_eq!(
        main_queue_counts(&stack).await,
        (100, 0),
        "every held message released, none left hidden for the visibility timeout"
    );
    lock.rollback().await.expect("ROLLBACK");

    let worker = stack.spawn_worker(&[]).await;
    assert_stored_exactly(&stack, &ids).await;
    drop(worker);
    stack.cleanup().await;
}
