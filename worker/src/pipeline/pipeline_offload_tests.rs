//! The pipeline's rules for webhooks offloaded to S3, against the fakes in paused time:
//! pointers resolved and stored as inline envelopes, objects deleted after the commit and
//! before the message (also for duplicates), gone objects (duplicate or poison), S3 failures
//! parked behind the S3 breaker, malformed pointers and objects to the DLQ with the object kept, and the fetch
//! budget.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use webhook_shared::envelope::Envelope;
use webhook_shared::large_payload::{ATTRIBUTE_PAYLOAD_SIZE, PayloadPointer};
use webhook_shared::sqs::{ATTRIBUTE_EVENT_ID, ATTRIBUTE_SOURCE};

use crate::db::handler::{HandlerError, Stored};
use crate::db::write_error::WriteError;
use crate::pipeline::resolve::SIZE_SLACK;
use crate::sqs::InboundMessage;
use crate::testing::objects::FakeObjects;
use crate::testing::pipeline::{settings, start_with, until};
use crate::testing::{FakeEventStore, FakeQueue, attribute, envelope};

const BUCKET: &str = "webhooks-large";

/// A pointer message to `key`, declaring `declared` bytes, naming `event` when given.
fn pointer_message(
    fake: &FakeQueue,
    key: &str,
    declared: u64,
    event: Option<&str>,
) -> InboundMessage {
    let pointer = PayloadPointer {
        bucket: BUCKET.to_owned(),
        key: key.to_owned(),
    };
    let mut message = fake.message(&pointer.to_json());
    message.attributes.insert(
        ATTRIBUTE_PAYLOAD_SIZE.to_owned(),
        attribute("Number", &declared.to_string()),
    );
    if let Some(id) = event {
        message
            .attributes
            .insert(ATTRIBUTE_SOURCE.to_owned(), attribute("String", "test"));
        message
            .attributes
            .insert(ATTRIBUTE_EVENT_ID.to_owned(), attribute("String", id));
    }
    message
}

/// Stores `envelope` as an object under `test/{id}` and returns the pointer message, as
/// ingest writes it.
fn offload(objects: &FakeObjects, fake: &FakeQueue, envelope: &Envelope) -> InboundMessage {
    let key = format!("test/{}", envelope.id);
    let json = envelope.to_json();
    objects.put(&key, json.clone());
    pointer_message(fake, &key, json.len() as u64, Some(&envelope.id))
}

/// A store that stores everything as `stored`, keeping the envelopes it was given.
fn recording(stored: Stored) -> (FakeEventStore, Arc<Mutex<Vec<Envelope>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let store = FakeEventStore::new(
        Duration::from_millis(5),
        Box::new({
            let seen = Arc::clone(&seen);
            move |events| {
                seen.lock().expect("not poisoned").extend_from_slice(events);
                Ok(vec![stored.clone(); events.len()])
            }
        }),
    );
    (store, seen)
}

#[tokio::test(start_paused = true)]
async fn a_pointer_is_stored_as_its_envelope_and_its_object_deleted_between_commit_and_message() {
    let fake = FakeQueue::default();
    let objects = FakeObjects::default();
    let mut binary = envelope("big");
    binary.body = Bytes::from((0..=255u8).cycle().take(100_000).collect::<Vec<u8>>());
    let message = offload(&objects, &fake, &binary);
    let message_id = message.receipt.message_id.clone();
    fake.push_messages(vec![message]);
    fake.push_envelopes(2);
    let (store, seen) = recording(Stored::New);
    objects.watch(&fake, &store);
    let running = start_with(&fake, store, &objects, 100, settings(2));
    until("all deleted", || fake.deleted().len() == 3).await;
    running.stop().await;

    let stored = seen.lock().expect("not poisoned").clone();
    let resolved = stored.iter().find(|e| e.id == "big").expect("stored");
    assert_eq!(*resolved, binary, "stored exactly as the envelope");
    assert!(!objects.has("test/big"), "deleted after the commit");
    let deletes = objects.deletes();
    assert_eq!(deletes.len(), 1, "only the offloaded one has an object");
    assert_eq!(deletes[0].key, "test/big");
    assert!(
        deletes[0].committed.contains(&"big".to_owned()),
        "after the commit"
    );
    assert!(
        !deletes[0].messages_deleted.contains(&message_id),
        "before the message"
    );
    assert!(fake.dlq().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_duplicate_pointer_has_its_object_deleted_too() {
    let fake = FakeQueue::default();
    let objects = FakeObjects::default();
    fake.push_messages(vec![offload(&objects, &fake, &envelope("dup"))]);
    let (store, _) = recording(Stored::Duplicate);
    let running = start_with(&fake, store, &objects, 100, settings(1));
    until("deleted", || fake.deleted().len() == 1).await;
    running.stop().await;
    assert!(!objects.has("test/dup"));
    assert_eq!(objects.deletes().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_gone_object_is_a_duplicate_when_its_event_is_stored_and_poison_otherwise() {
    let fake = FakeQueue::default();
    let objects = FakeObjects::default();
    let (store, seen) = recording(Stored::New);
    let running = start_with(&fake, store, &objects, 100, settings(1));
    fake.push([envelope("e1").to_json()]);
    until("e1 stored", || fake.deleted().len() == 1).await;

    // e1's object was deleted after its commit; its message comes again.
    let again = pointer_message(&fake, "test/e1", 500, Some("e1"));
    let never = pointer_message(&fake, "test/e2", 500, Some("e2"));
    let anonymous = pointer_message(&fake, "python/uuid", 500, None);
    let ids = fake.push_messages(vec![again, never, anonymous]);
    until("all handled", || fake.deleted().len() == 4).await;
    running.stop().await;

    assert!(fake.deleted().contains(&ids[0]), "the duplicate is deleted");
    assert_eq!(seen.lock().expect("not poisoned").len(), 1, "written once");
    let dlq = fake.dlq();
    assert_eq!(dlq.len(), 2, "{dlq:?}");
    let (body, reason) = dlq
        .iter()
        .find(|(_, reason)| reason.contains("test/e2"))
        .expect("e2 is poison");
    assert!(
        reason.contains("webhooks-large/test/e2") && reason.contains("gone"),
        "{reason}"
    );
    assert!(
        body.contains("PayloadS3Pointer"),
        "the DLQ keeps the pointer"
    );
    assert!(
        dlq.iter()
            .any(|(_, reason)| reason.contains("python/uuid") && reason.contains("names no event")),
        "{dlq:?}"
    );
    assert!(objects.deletes().is_empty(), "poison keeps its object");
}

#[tokio::test(start_paused = true)]
async fn an_s3_failure_parks_the_message_without_a_word_to_sqs_until_s3_is_back() {
    let fake = FakeQueue::default();
    let objects = FakeObjects::default();
    objects.state().failing_gets = 1;
    let message = offload(&objects, &fake, &envelope("flaky"));
    fake.push_messages(vec![message]);
    let (store, seen) = recording(Stored::New);
    let running = start_with(&fake, store, &objects, 100, settings(1));
    until("stored after the probe", || fake.deleted().len() == 1).await;
    running.stop().await;

    let state = fake.state();
    assert!(
        state.visibility_changes.is_empty(),
        "no back-off, no receive used up"
    );
    assert!(state.dlq.is_empty());
    assert_eq!(seen.lock().expect("not poisoned").len(), 1);
    assert_eq!(objects.state().probes, 1, "one probe closed the breaker");
    assert!(!objects.has("test/flaky"), "deleted after its commit");
}

#[tokio::test(start_paused = true)]
async fn an_s3_outage_parks_pointers_while_small_webhooks_flow_and_sends_nothing_to_the_dlq() {
    let fake = FakeQueue::default();
    let objects = FakeObjects::default();
    objects.state().down = true;
    let pointers: Vec<InboundMessage> = (0..30)
        .map(|n| offload(&objects, &fake, &envelope(&format!("large-{n}"))))
        .collect();
    fake.push_messages(pointers);
    let small = fake.push_envelopes(10);
    let (store, seen) = recording(Stored::New);
    let running = start_with(&fake, store, &objects, 100, settings(2));
    until("the small ones stored during the outage", || {
        let deleted = fake.deleted();
        small.iter().all(|id| deleted.contains(id))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(90)).await;
    assert_eq!(
        fake.deleted().len(),
        10,
        "no pointer resolved while S3 is down"
    );
    let probes = objects.state().probes;
    assert!((17..=20).contains(&probes), "a probe every 5 s: {probes}");
    objects.state().down = false;
    until("every pointer stored once S3 is back", || {
        fake.deleted().len() == 40
    })
    .await;
    running.stop().await;

    let state = fake.state();
    assert!(
        state.dlq.is_empty(),
        "an S3 outage sends nothing to the DLQ"
    );
    // Only the heartbeat's extensions (the settings' 30 s): parked, neither backed off nor
    // released, so no receive count used up.
    assert!(
        !state.visibility_changes.is_empty(),
        "kept hidden while parked"
    );
    assert!(
        state
            .visibility_changes
            .iter()
            .all(|(_, visibility)| *visibility == Duration::from_secs(30)),
        "{:?}",
        state.visibility_changes
    );
    assert_eq!(seen.lock().expect("not poisoned").len(), 40);
}

#[tokio::test(start_paused = true)]
async fn malformed_pointers_and_objects_are_poison_and_objects_are_kept() {
    let fake = FakeQueue::default();
    let objects = FakeObjects::default();
    let mut not_a_pointer = fake.message(&envelope("x").to_json());
    not_a_pointer
        .attributes
        .insert(ATTRIBUTE_PAYLOAD_SIZE.to_owned(), attribute("Number", "10"));
    objects.put("test/junk", "not an envelope");
    let junk = pointer_message(&fake, "test/junk", 15, Some("junk"));
    objects.put("test/huge", vec![b'x'; 100 + SIZE_SLACK as usize + 1]);
    let huge = pointer_message(&fake, "test/huge", 100, Some("huge"));
    fake.push_messages(vec![not_a_pointer, junk, huge]);
    let (store, seen) = recording(Stored::New);
    let running = start_with(&fake, store, &objects, 100, settings(1));
    until("all moved", || fake.dlq().len() == 3).await;
    running.stop().await;

    let reasons: Vec<String> = fake.dlq().into_iter().map(|(_, reason)| reason).collect();
    assert!(reasons[0].contains("S3 payload pointer"), "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("test/junk") && r.contains("not")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("test/huge") && r.contains("declared 100")),
        "{reasons:?}"
    );
    assert!(seen.lock().expect("not poisoned").is_empty());
    assert!(objects.has("test/junk") && objects.has("test/huge"));
    let mut refreshed = objects.state().refreshed.clone();
    refreshed.sort();
    assert_eq!(
        refreshed,
        vec!["test/huge", "test/junk"],
        "refreshed before their pointers went to the DLQ"
    );
}

#[tokio::test(start_paused = true)]
async fn a_refused_offloaded_event_goes_to_the_dlq_as_its_pointer() {
    let fake = FakeQueue::default();
    let objects = FakeObjects::default();
    fake.push_messages(vec![offload(&objects, &fake, &envelope("bad"))]);
    let store = FakeEventStore::new(
        Duration::ZERO,
        Box::new(|_| {
            Err(WriteError::Handler(HandlerError::Permanent(
                "violates check constraint".into(),
            )))
        }),
    );
    let running = start_with(&fake, store, &objects, 100, settings(1));
    until("moved", || fake.dlq().len() == 1).await;
    running.stop().await;
    let (body, reason) = fake.dlq().remove(0);
    assert!(body.contains("PayloadS3Pointer"), "{body}");
    assert!(reason.contains("check constraint"), "{reason}");
    assert!(objects.has("test/bad"));
    assert_eq!(
        objects.state().refreshed,
        vec!["test/bad"],
        "the object's lifetime starts over with the DLQ's"
    );
}

#[tokio::test(start_paused = true)]
async fn a_pointer_whose_object_cannot_be_refreshed_is_released_not_dead_lettered() {
    let fake = FakeQueue::default();
    let objects = FakeObjects::default();
    objects.put("test/junk", "not an envelope");
    let junk = pointer_message(&fake, "test/junk", 15, Some("junk"));
    let id = junk.receipt.message_id.clone();
    fake.push_messages(vec![junk]);
    let (store, _) = recording(Stored::New);
    // S3 reads the object, then fails the refresh.
    objects.state().failing_refreshes = true;
    let running = start_with(&fake, store, &objects, 100, settings(1));
    until("released", || !fake.state().visibility_changes.is_empty()).await;
    running.stop().await;
    let state = fake.state();
    assert!(
        state.dlq.is_empty(),
        "no pointer in the DLQ without its object refreshed"
    );
    assert_eq!(state.visibility_changes[0].0, id);
}

#[tokio::test(start_paused = true)]
async fn a_failed_object_delete_does_not_hold_back_the_message() {
    let fake = FakeQueue::default();
    let objects = FakeObjects::default();
    objects.state().failing_deletes = true;
    fake.push_messages(vec![offload(&objects, &fake, &envelope("stuck"))]);
    let (store, _) = recording(Stored::New);
    let running = start_with(&fake, store, &objects, 100, settings(1));
    until("deleted", || fake.deleted().len() == 1).await;
    running.stop().await;
    assert_eq!(objects.deletes().len(), 1, "tried once, not retried");
    assert!(objects.has("test/stuck"), "left to the lifecycle rule");
}

#[tokio::test(start_paused = true)]
async fn the_fetch_budget_bounds_the_fetches_and_a_larger_object_still_goes_alone() {
    let fake = FakeQueue::default();
    let objects = FakeObjects::default();
    objects.state().get_delay = Duration::from_secs(1);
    let mut messages: Vec<InboundMessage> = (0..3)
        .map(|n| offload(&objects, &fake, &envelope(&format!("p{n}"))))
        .collect();
    let mut oversized = envelope("oversized");
    oversized.body = Bytes::from(vec![b'a'; 2_000]);
    messages.push(offload(&objects, &fake, &oversized));
    fake.push_messages(messages);
    let (store, seen) = recording(Stored::New);
    let mut settings = settings(4);
    // Each small object is about 140 bytes: two never fit in the budget at once.
    settings.caps.bytes = 200;
    settings.max_fetched_bytes = NonZeroU32::new(200).expect("non-zero");
    let running = start_with(&fake, store, &objects, 100, settings);
    until("all deleted", || fake.deleted().len() == 4).await;
    running.stop().await;
    assert_eq!(seen.lock().expect("not poisoned").len(), 4);
    assert_eq!(
        objects.state().max_in_progress,
        1,
        "one batch's objects at a time within the budget"
    );
}
