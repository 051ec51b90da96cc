//! The worker's side of large webhooks through S3 (issue 12), end to end against LocalStack
//! S3 and SQS and PostgreSQL: a kill -9 between commit and object delete still leaves one
//! row; a pointer whose object is gone is a duplicate or poison; AWS's Python extended client
//! and our binaries read each other's messages.

use std::time::Duration;

use e2e_tests::large::{MIB, envelope, github_request, json_body, spawn_offloading_ingest};
use e2e_tests::probes::wait_for_some_rows;
use e2e_tests::{QueueOptions, Service, TestStack};
use webhook_shared::envelope::Envelope;
use webhook_shared::large_payload::ATTRIBUTE_PAYLOAD_SIZE;

/// Time for the worker to store what it was given.
const STORE_TIMEOUT: Duration = Duration::from_secs(60);

/// The DLQ's messages: (body, poison_reason attribute).
async fn dlq_messages(stack: &TestStack) -> Vec<(String, Option<String>)> {
    let output = stack
        .sqs
        .receive_message()
        .queue_url(&stack.dlq_url)
        .max_number_of_messages(10)
        .message_attribute_names("All")
        .wait_time_seconds(1)
        .send()
        .await
        .expect("ReceiveMessage (DLQ)");
    output
        .messages
        .unwrap_or_default()
        .into_iter()
        .map(|message| {
            let reason = message
                .message_attributes
                .as_ref()
                .and_then(|a| a.get("poison_reason")?.string_value.clone());
            (message.body.unwrap_or_default(), reason)
        })
        .collect()
}

/// A worker resolving pointers to `bucket`.
async fn spawn_bucket_worker(stack: &TestStack, bucket: &str) -> Service {
    stack
        .spawn_worker(&[("LARGE_PAYLOAD_BUCKET", bucket)])
        .await
}

/// A worker resolving pointers to `bucket`, once it has stored the one webhook waiting and
/// deleted its object.
async fn worker_after_storing_one(stack: &TestStack, bucket: &str) -> Service {
    let worker = spawn_bucket_worker(stack, bucket).await;
    stack.wait_for_rows(1, STORE_TIMEOUT).await;
    stack
        .wait_for_empty_bucket(bucket, Duration::from_secs(30))
        .await;
    worker
}

/// Asserts that `event`'s row holds its body byte for byte (without printing megabytes).
async fn assert_stored(stack: &TestStack, event: &Envelope) {
    let stored = stack.stored_body(&event.source, &event.id).await;
    assert!(
        stored.as_deref() == Some(event.body.as_ref()),
        "{}: stored body differs",
        event.id
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pointer_redelivered_after_its_commit_leaves_one_row_and_deletes_its_object() {
    let stack = TestStack::new("large-redelivered").await;
    let bucket = stack.create_bucket().await;
    let event = envelope("github", "redelivered-1", json_body(2 * MIB, 1));
    stack.offload(&bucket, &event).await;
    let worker = worker_after_storing_one(&stack, &bucket).await;

    // What a kill -9 after the commit and before the deletes leaves: the row, the object and
    // the message (visible again after its timeout). Recreate that state exactly.
    stack.offload(&bucket, &event).await;
    stack
        .wait_for_empty(&stack.queue_url, Duration::from_secs(30))
        .await;
    stack
        .wait_for_empty_bucket(&bucket, Duration::from_secs(30))
        .await;
    assert_eq!(stack.stored_count().await, 1);
    assert_stored(&stack, &event).await;
    assert_eq!(
        stack.messages_in(&stack.dlq_url).await,
        0,
        "a duplicate, not poison"
    );
    drop(worker);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_drain_of_offloaded_webhooks_then_restart_stores_each_once() {
    const MESSAGES: usize = 60;
    let options = QueueOptions {
        visibility_timeout: 5,
        ..Default::default()
    };
    let stack = TestStack::with_queues("large-kill-9", options).await;
    let bucket = stack.create_bucket().await;
    let mut events = Vec::new();
    for n in 0..MESSAGES {
        let event = envelope(
            "github",
            &format!("kill-{n}"),
            json_body(800 * 1024, n as u64),
        );
        stack.offload(&bucket, &event).await;
        events.push(event);
    }
    // Small transactions so that commits and deletes interleave all through the drain.
    let settings = [
        ("LARGE_PAYLOAD_BUCKET", bucket.as_str()),
        ("WORKER_BATCH_MAX_ROWS", "2"),
    ];
    let worker = stack.spawn_worker(&settings).await;
    wait_for_some_rows(&stack, 5).await;
    worker.kill().await;
    let at_kill = stack.stored_count().await;

    let worker = stack.spawn_worker(&settings).await;
    stack
        .wait_for_rows(MESSAGES as i64, STORE_TIMEOUT * 2)
        .await;
    stack
        .wait_for_empty(&stack.queue_url, Duration::from_secs(60))
        .await;
    assert_eq!(
        stack.stored_count().await,
        MESSAGES as i64,
        "each stored once"
    );
    for event in &events {
        assert_stored(&stack, event).await;
    }
    stack
        .wait_for_empty_bucket(&bucket, Duration::from_secs(30))
        .await;
    assert_eq!(stack.messages_in(&stack.dlq_url).await, 0);
    assert!(
        at_kill < MESSAGES as i64,
        "the kill came after the drain ({at_kill} rows): it tested nothing"
    );
    drop(worker);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pointer_whose_object_is_gone_is_a_duplicate_if_stored_and_poison_otherwise() {
    let stack = TestStack::new("large-gone").await;
    let bucket = stack.create_bucket().await;
    let stored = envelope("github", "gone-stored", json_body(MIB, 1));
    let key = stack.offload(&bucket, &stored).await;
    let worker = worker_after_storing_one(&stack, &bucket).await;

    // Its pointer again, the object gone (deleted after the first commit): a duplicate.
    stack.send_pointer(&bucket, &key, &stored, MIB).await;
    // A pointer to an object that never existed, for an event never stored: poison.
    let lost = envelope("github", "gone-never-stored", json_body(MIB, 2));
    let lost_key = webhook_shared::large_payload::object_key("github", &lost.id);
    stack.send_pointer(&bucket, &lost_key, &lost, MIB).await;

    stack
        .wait_for_empty(&stack.queue_url, Duration::from_secs(60))
        .await;
    assert_eq!(stack.stored_count().await, 1);
    let mut dead = Vec::new();
    for _ in 0..10 {
        dead.extend(dlq_messages(&stack).await);
        if !dead.is_empty() {
            break;
        }
    }
    assert_eq!(
        dead.len(),
        1,
        "only the never-stored one is poison: {dead:?}"
    );
    let (body, reason) = &dead[0];
    assert!(body.contains(&lost_key), "the pointer itself: {body}");
    let reason = reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains(&lost_key) || reason.contains(&bucket),
        "the reason names the object: {reason:?}"
    );
    drop(worker);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_extended_client_and_our_binaries_read_each_others_messages() {
    let stack = TestStack::new("large-python").await;
    let bucket = stack.create_bucket().await;

    // Python writes (always through S3, uuid4 key, no source/event_id attributes); the
    // worker stores it.
    let written = envelope("python", "written-by-python", json_body(2 * MIB, 5));
    stack
        .extended_client_send(&bucket, &written.to_json())
        .await;
    assert_eq!(
        stack.object_count(&bucket).await,
        1,
        "the library stored an object"
    );
    let worker = spawn_bucket_worker(&stack, &bucket).await;
    stack.wait_for_rows(1, STORE_TIMEOUT).await;
    assert_stored(&stack, &written).await;
    stack
        .wait_for_empty(&stack.queue_url, Duration::from_secs(30))
        .await;
    stack
        .wait_for_empty_bucket(&bucket, Duration::from_secs(30))
        .await;
    worker.terminate(Duration::from_secs(30)).await;

    // ingest writes (a 3 MiB GitHub webhook, offloaded); Python reads it, pointer resolved.
    let ingest = spawn_offloading_ingest(&stack, &bucket, &[]).await;
    let body = json_body(3 * MIB, 6);
    let response = github_request(
        &reqwest::Client::new(),
        &ingest,
        "read-by-python",
        body.clone(),
    )
    .send()
    .await
    .expect("POST");
    assert_eq!(response.status(), 202, "{}", ingest.log());
    assert_eq!(
        stack.object_keys(&bucket).await,
        vec!["github/read-by-python".to_owned()],
        "ingest offloaded it"
    );
    let received = stack
        .extended_client_receive(1, Duration::from_secs(20))
        .await;
    assert_eq!(received.len(), 1, "Python received the message");
    let message = &received[0];
    let decoded = Envelope::from_json(&message.body)
        .unwrap_or_else(|error| panic!("the resolved body is an envelope: {error}"));
    assert_eq!(decoded.id, "read-by-python");
    assert_eq!(decoded.source, "github");
    assert!(decoded.body == body, "the body decodes to what was sent");
    // The library resolved a pointer: it removes its reserved size attribute once it has
    // fetched the object, and passes ours through.
    assert!(
        !message.attributes.contains_key(ATTRIBUTE_PAYLOAD_SIZE),
        "attributes: {:?}",
        message.attributes
    );
    assert_eq!(
        message.attributes.get("event_id").map(String::as_str),
        Some("read-by-python")
    );
    drop(ingest);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pointer_bound_for_the_dlq_has_its_object_refreshed_first() {
    let stack = TestStack::new("large-refresh").await;
    let bucket = stack.create_bucket().await;
    // An object that is not an envelope (poison), under a key that needs URL-encoding in
    // CopySource.
    let junk = envelope("github", "junk id+1/é", Vec::new());
    let key = webhook_shared::large_payload::object_key(&junk.source, &junk.id);
    stack.put_object(&bucket, &key, "not an envelope").await;
    stack.send_pointer(&bucket, &key, &junk, 15).await;
    let head = async || {
        stack
            .s3
            .head_object()
            .bucket(&bucket)
            .key(&key)
            .send()
            .await
            .expect("HeadObject: the object is kept")
            .last_modified
            .expect("LastModified")
    };
    let put_at = head().await;
    // LastModified has a resolution of a second.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let worker = spawn_bucket_worker(&stack, &bucket).await;
    let mut dead = Vec::new();
    for _ in 0..30 {
        dead.extend(dlq_messages(&stack).await);
        if !dead.is_empty() {
            break;
        }
    }
    assert_eq!(dead.len(), 1, "poison: {}", worker.log());
    assert!(
        dead[0].0.contains("PayloadS3Pointer"),
        "the pointer: {}",
        dead[0].0
    );
    let refreshed_at = head().await;
    assert!(
        refreshed_at.secs() > put_at.secs(),
        "the lifecycle counts from the DLQ send: {put_at:?} then {refreshed_at:?}"
    );
    assert_eq!(
        stack.object(&bucket, &key).await.as_deref(),
        Some(b"not an envelope".as_slice()),
        "the same bytes"
    );
    drop(worker);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_during_an_s3_outage_stores_small_webhooks_and_parks_large_ones() {
    use e2e_tests::fault_proxy::{Fault, FaultProxy};
    use e2e_tests::probes::gauge;

    let stack = TestStack::new("large-s3-outage").await;
    let bucket = stack.create_bucket().await;
    let s3 = FaultProxy::start(&e2e_tests::queues::sqs_endpoint()).await;
    s3.set(Fault::Error);
    let s3_endpoint = s3.url();
    let large = envelope("github", "large-during-outage", json_body(MIB, 7));
    stack.offload(&bucket, &large).await;
    let small = stack.preload(5).await;
    // S3 answers 503 SlowDown to the worker alone: it starts all the same.
    let worker = stack
        .spawn_worker(&[
            ("LARGE_PAYLOAD_BUCKET", bucket.as_str()),
            ("AWS_ENDPOINT_URL_S3", s3_endpoint.as_str()),
        ])
        .await;
    stack.wait_for_rows(5, STORE_TIMEOUT).await;
    let metrics = worker.metrics().await;
    assert_eq!(
        gauge(&metrics, "webhook_worker_s3_circuit_open", &[]),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(stack.stored_count().await, 5, "the large one waits");
    s3.set(Fault::None);
    stack.wait_for_rows(6, STORE_TIMEOUT).await;
    assert_stored(&stack, &large).await;
    assert_eq!(
        stack.messages_in(&stack.dlq_url).await,
        0,
        "nothing in the DLQ"
    );
    assert_eq!(small.len(), 5);
    drop(worker);
    stack.cleanup().await;
}
