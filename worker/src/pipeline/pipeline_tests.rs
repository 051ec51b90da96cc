//! The pipeline's rules against the fakes, in paused time: delete after commit, coalesced
//! writes and deletes, the window and the write limit, poison and refused events to the DLQ,
//! back-off grouping, the circuit breaker, and the shutdown release.

use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Semaphore;

use crate::db::handler::{HandlerError, Stored};
use crate::db::write_error::WriteError;
use crate::pipeline::circuit::RELEASE_VISIBILITY;
use crate::testing::{FakeEventStore, FakeQueue};

use crate::testing::pipeline::{settings, start, until};

#[tokio::test(start_paused = true)]
async fn a_backlog_is_written_in_full_batches_and_deleted_in_full_calls_after_commit() {
    let fake = FakeQueue::default();
    let ids = fake.push_envelopes(1_000);
    let store = FakeEventStore::accepting(Duration::from_millis(20));
    let written = Arc::clone(&store.state);
    let running = start(&fake, store, 400, settings(2));
    until("all deleted", || fake.deleted().len() == ids.len()).await;
    running.stop().await;

    let state = FakeEventStore::lock(&written);
    assert_eq!(state.committed.len(), 1_000, "each event written once");
    assert!(state.max_in_progress <= 2, "{}", state.max_in_progress);
    let full = state.batches.iter().filter(|&&rows| rows > 10).count();
    assert!(
        full * 2 >= state.batches.len(),
        "writes coalesce several receives: {:?}",
        state.batches
    );
    let calls = fake.delete_calls();
    let partial = calls.iter().filter(|&&n| n < 10).count();
    assert!(partial <= 2, "deletes in full batches: {calls:?}");
    let queue = fake.state();
    assert!(
        queue.max_outstanding <= 400,
        "window exceeded: {}",
        queue.max_outstanding
    );
    assert!(
        queue.receive_sizes.iter().all(|&n| n == 10),
        "receives ask for 10"
    );
}

#[tokio::test(start_paused = true)]
async fn nothing_is_deleted_before_its_commit() {
    let fake = FakeQueue::default();
    fake.push_envelopes(30);
    let mut store = FakeEventStore::accepting(Duration::ZERO);
    let gate = Arc::new(Semaphore::new(0));
    store.gate = Some(Arc::clone(&gate));
    let running = start(&fake, store, 100, settings(1));
    until("all held", || running.window.all_receipts().len() == 30).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(fake.deleted().is_empty(), "deleted before the commit");
    gate.add_permits(100);
    until("all deleted", || fake.deleted().len() == 30).await;
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_lone_message_is_written_at_once() {
    let fake = FakeQueue::default();
    let store = FakeEventStore::accepting(Duration::from_millis(5));
    let written = Arc::clone(&store.state);
    let running = start(&fake, store, 100, settings(4));
    tokio::time::sleep(Duration::from_secs(1)).await;
    fake.push_envelopes(1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(FakeEventStore::lock(&written).committed.len(), 1);
    assert_eq!(fake.deleted().len(), 1);
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn poison_and_refused_events_go_to_the_dlq_and_the_rest_are_stored() {
    let fake = FakeQueue::default();
    fake.push_envelopes(20);
    let poison = format!(r#"{{"v":"{}"}}"#, "€".repeat(100));
    fake.push([poison.clone(), "not json".to_owned()]);
    // The database refuses event e7 for good, failing any batch that holds it.
    let store = FakeEventStore::new(
        Duration::from_millis(5),
        Box::new(|events| {
            if events.iter().any(|e| e.id == "e7") {
                Err(WriteError::Handler(HandlerError::Permanent(
                    "violates check constraint".into(),
                )))
            } else {
                Ok(vec![Stored::New; events.len()])
            }
        }),
    );
    let written = Arc::clone(&store.state);
    let running = start(&fake, store, 100, settings(2));
    until("all done", || fake.deleted().len() == 22).await;
    running.stop().await;

    assert_eq!(FakeEventStore::lock(&written).committed.len(), 19);
    let dlq = fake.dlq();
    assert_eq!(dlq.len(), 3, "{dlq:?}");
    assert!(dlq.iter().any(|(body, _)| *body == poison));
    let refused = dlq
        .iter()
        .find(|(body, _)| body.contains(r#""id":"e7""#))
        .expect("e7 in the DLQ, as an envelope");
    assert!(refused.1.contains("check constraint"), "{}", refused.1);
}

#[tokio::test(start_paused = true)]
async fn a_handler_that_miscounts_is_a_bug_not_a_sick_database() {
    let fake = FakeQueue::default();
    fake.push_envelopes(3);
    let store = FakeEventStore::new(
        Duration::ZERO,
        Box::new(|_| {
            Err(WriteError::WrongResultCount {
                results: 0,
                events: 1,
            })
        }),
    );
    let running = start(&fake, store, 100, settings(1));
    until("all moved", || fake.dlq().len() == 3).await;
    running.stop().await;
    assert!(
        fake.dlq()
            .iter()
            .all(|(_, reason)| reason.contains("handler bug"))
    );
    let retried = fake
        .state()
        .visibility_changes
        .iter()
        .filter(|(_, visibility)| !visibility.is_zero())
        .count();
    assert_eq!(retried, 0, "never retried as if the database were sick");
}

#[tokio::test(start_paused = true)]
async fn a_transient_failure_hides_every_message_for_its_back_off() {
    let fake = FakeQueue::default();
    fake.push_envelopes(25);
    let store = FakeEventStore::new(
        Duration::from_millis(5),
        Box::new(|_| {
            Err(WriteError::Handler(HandlerError::Transient(
                "connection reset".into(),
            )))
        }),
    );
    let running = start(&fake, store, 100, settings(2));
    until("all backed off", || {
        fake.state().visibility_changes.len() >= 25
    })
    .await;
    running.stop().await;
    let state = fake.state();
    assert!(state.deleted.is_empty());
    assert!(
        state.dlq.is_empty(),
        "a sick database sends nothing to the DLQ"
    );
    assert!(
        state
            .visibility_changes
            .iter()
            .all(|(_, visibility)| *visibility == Duration::from_secs(2)),
        "first receive: the base back-off"
    );
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_database_pauses_receiving_until_a_probe_succeeds() {
    let fake = FakeQueue::default();
    fake.push_envelopes(25);
    let down = Arc::new(AtomicBool::new(true));
    let mut store = FakeEventStore::new(
        Duration::from_millis(5),
        Box::new({
            let down = Arc::clone(&down);
            move |events| {
                if down.load(Ordering::SeqCst) {
                    Err(HandlerError::from(sqlx::Error::PoolTimedOut).into())
                } else {
                    Ok(vec![Stored::New; events.len()])
                }
            }
        }),
    );
    store.down = Arc::clone(&down);
    let written = Arc::clone(&store.state);
    let running = start(&fake, store, 100, settings(2));
    until("all released", || {
        fake.state().visibility_changes.len() >= 25
    })
    .await;
    // Messages that arrive during the outage are not received once the receives in flight
    // when the circuit opened have ended (a long poll lasts at most 20 s).
    fake.push_envelopes(10);
    tokio::time::sleep(Duration::from_secs(25)).await;
    let receives_then = fake.state().receive_sizes.len();
    let probes_then = FakeEventStore::lock(&written).probes;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        fake.state().receive_sizes.len(),
        receives_then,
        "no receive while the database is unreachable"
    );
    let probes = FakeEventStore::lock(&written).probes - probes_then;
    assert!((10..=13).contains(&probes), "a probe every 5 s: {probes}");
    {
        let state = fake.state();
        assert!(state.dlq.is_empty(), "an outage sends nothing to the DLQ");
        assert!(state.deleted.is_empty());
        assert!(
            state
                .visibility_changes
                .iter()
                .all(|(_, visibility)| *visibility == RELEASE_VISIBILITY),
            "released for a short while, not backed off: {:?}",
            state.visibility_changes
        );
    }

    down.store(false, Ordering::SeqCst);
    let ids = fake.push_envelopes(5);
    until(
        "receiving resumed, and what came was stored and deleted",
        || {
            let deleted = &fake.state().deleted;
            ids.iter().all(|id| deleted.contains(id))
        },
    )
    .await;
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_a_receive_releases_what_it_brings() {
    let fake = FakeQueue::default();
    let store = FakeEventStore::accepting(Duration::ZERO);
    let written = Arc::clone(&store.state);
    let running = start(&fake, store, 100, settings(1));
    tokio::time::sleep(Duration::from_secs(1)).await;
    running.shutdown.cancel();
    // The long poll in flight brings messages after the signal.
    let ids = fake.push_envelopes(3);
    running.task.await.expect("the pipeline ends");
    assert!(
        FakeEventStore::lock(&written).committed.is_empty(),
        "no more taken"
    );
    let released: Vec<String> = fake
        .state()
        .visibility_changes
        .iter()
        .filter(|(_, visibility)| visibility.is_zero())
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(released, ids);
}

#[tokio::test(start_paused = true)]
async fn after_the_grace_period_work_is_aborted_and_held_messages_released() {
    let fake = FakeQueue::default();
    fake.push_envelopes(15);
    let mut store = FakeEventStore::accepting(Duration::ZERO);
    store.gate = Some(Arc::new(Semaphore::new(0)));
    let running = start(&fake, store, 100, settings(1));
    until("all held", || running.window.all_receipts().len() == 15).await;
    let started = tokio::time::Instant::now();
    running.shutdown.cancel();
    running.task.await.expect("the pipeline ends");
    assert!(
        started.elapsed() <= Duration::from_secs(11),
        "{:?}",
        started.elapsed()
    );
    let released = fake
        .state()
        .visibility_changes
        .iter()
        .filter(|(_, visibility)| visibility.is_zero())
        .count();
    assert_eq!(released, 15);
}

#[tokio::test(start_paused = true)]
async fn held_messages_get_their_visibility_extended_even_when_zero() {
    let fake = FakeQueue::default();
    fake.push_envelopes(12);
    let mut store = FakeEventStore::accepting(Duration::ZERO);
    let gate = Arc::new(Semaphore::new(0));
    store.gate = Some(Arc::clone(&gate));
    let mut settings = settings(1);
    settings.visibility = Duration::from_secs(4);
    let running = start(&fake, store, 100, settings);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let extended = fake.state().visibility_changes.len();
    // 12 messages (one writing, eleven waiting) extended every ~2 s for 10 s.
    assert!(extended >= 12 * 3, "{extended}");
    gate.add_permits(100);
    until("all deleted", || fake.deleted().len() == 12).await;
    running.stop().await;
    assert_eq!(
        crate::pipeline::heartbeat::period(Duration::ZERO),
        Duration::from_millis(250)
    );
}
