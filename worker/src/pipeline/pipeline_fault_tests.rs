//! The pipeline's blame rules against the fakes, in paused time: a failure to connect or log
//! in, an error every event hits alike, and many events refused alike all pause the worker
//! and send nothing to the dead-letter queue; a refusal of one event's data still does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::db::handler::{HandlerError, Stored};
use crate::db::write_error::WriteError;
use crate::pipeline::circuit::RELEASE_VISIBILITY;
use crate::pipeline::refusal_fuse::FIRST_HOLD;
use crate::testing::objects::FakeObjects;
use crate::testing::pg_error;
use crate::testing::pipeline::{settings, start_with, until};
use crate::testing::{FakeEventStore, FakeQueue};

/// A store that fails every write with `failure()` while `down`, stores everything after.
fn failing_while(down: &Arc<AtomicBool>, failure: fn(usize) -> WriteError) -> FakeEventStore {
    let mut store = FakeEventStore::new(
        Duration::from_millis(5),
        Box::new({
            let down = Arc::clone(down);
            move |events| {
                if down.load(Ordering::SeqCst) {
                    Err(failure(events.len()))
                } else {
                    Ok(vec![Stored::New; events.len()])
                }
            }
        }),
    );
    store.down = Arc::clone(down);
    store
}

/// Runs 25 webhooks through a store failing with `failure` for 60 s, then healthy: nothing
/// reaches the DLQ, everything is stored, and no receive runs while the failure lasts.
async fn pauses_without_dead_letters(failure: fn(usize) -> WriteError) {
    let fake = FakeQueue::default();
    let ids = fake.push_envelopes(25);
    let down = Arc::new(AtomicBool::new(true));
    let store = failing_while(&down, failure);
    let running = start_with(&fake, store, &FakeObjects::default(), 100, settings(2));
    until("all released", || {
        fake.state().visibility_changes.len() >= 25
    })
    .await;
    tokio::time::sleep(Duration::from_secs(25)).await;
    let receives = fake.state().receive_sizes.len();
    tokio::time::sleep(Duration::from_secs(35)).await;
    {
        let state = fake.state();
        assert_eq!(state.receive_sizes.len(), receives, "paused: no receive");
        assert!(
            state.dlq.is_empty(),
            "nothing dead-lettered: {:?}",
            state.dlq
        );
        assert!(
            state
                .visibility_changes
                .iter()
                .all(|(_, visibility)| *visibility == RELEASE_VISIBILITY),
            "released, not backed off by receive count"
        );
    }
    down.store(false, Ordering::SeqCst);
    fake.make_all_visible();
    until("all stored once the database is back", || {
        let deleted = &fake.state().deleted;
        ids.iter().all(|id| deleted.contains(id))
    })
    .await;
    running.stop().await;
    assert!(fake.state().dlq.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_revoked_login_pauses_and_dead_letters_nothing() {
    pauses_without_dead_letters(|_| WriteError::Connect(pg_error("28P01", None))).await;
}

#[tokio::test(start_paused = true)]
async fn a_silent_connection_past_its_deadline_pauses_and_dead_letters_nothing() {
    pauses_without_dead_letters(|_| WriteError::Deadline(Duration::from_secs(4))).await;
}

#[tokio::test(start_paused = true)]
async fn an_error_every_event_hits_alike_pauses_instead_of_splitting() {
    // Privileges revoked on the table: 42501 inside the transaction, for any batch.
    pauses_without_dead_letters(|_| {
        WriteError::Handler(HandlerError::from(pg_error("42501", None)))
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_lock_held_past_lock_timeout_pauses() {
    pauses_without_dead_letters(|_| {
        WriteError::Handler(HandlerError::from(pg_error("55P03", None)))
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_constraint_refusing_every_event_trips_the_fuse_and_dead_letters_nothing() {
    let fake = FakeQueue::default();
    let ids = fake.push_envelopes(25);
    let broken = Arc::new(AtomicBool::new(true));
    let store = FakeEventStore::new(
        Duration::from_millis(5),
        Box::new({
            let broken = Arc::clone(&broken);
            move |events| {
                if broken.load(Ordering::SeqCst) {
                    Err(WriteError::Handler(HandlerError::from(pg_error(
                        "23514",
                        Some("amount_positive"),
                    ))))
                } else {
                    Ok(vec![Stored::New; events.len()])
                }
            }
        }),
    );
    let running = start_with(&fake, store, &FakeObjects::default(), 100, settings(2));
    until("all released", || {
        fake.state().visibility_changes.len() >= 25
    })
    .await;
    // The constraint is dropped while the circuit holds: the next writes go through.
    broken.store(false, Ordering::SeqCst);
    tokio::time::sleep(FIRST_HOLD).await;
    fake.make_all_visible();
    until("all stored after the hold", || {
        let deleted = &fake.state().deleted;
        ids.iter().all(|id| deleted.contains(id))
    })
    .await;
    running.stop().await;
    assert!(fake.state().dlq.is_empty(), "nothing dead-lettered");
}

#[tokio::test(start_paused = true)]
async fn one_bad_event_among_good_ones_still_reaches_the_dlq() {
    let fake = FakeQueue::default();
    let ids = fake.push_envelopes(25);
    let store = FakeEventStore::new(
        Duration::from_millis(5),
        Box::new(|events| {
            if events.iter().any(|e| e.id == "e7") {
                Err(WriteError::Handler(HandlerError::from(pg_error(
                    "22P02", None,
                ))))
            } else {
                Ok(vec![Stored::New; events.len()])
            }
        }),
    );
    let running = start_with(&fake, store, &FakeObjects::default(), 100, settings(2));
    until("the bad event dead-lettered after its quarantine", || {
        fake.state().dlq.len() == 1
    })
    .await;
    running.stop().await;
    let state = fake.state();
    assert_eq!(
        state.deleted.len(),
        ids.len(),
        "the others stored, the bad one moved"
    );
    assert!(state.dlq[0].1.contains("22P02"), "{:?}", state.dlq);
}
