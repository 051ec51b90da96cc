//! What ingest puts in each SQS entry, against real LocalStack: a message counts its
//! attributes toward SQS's 1 MiB (one that fits only without them is refused with 413 and
//! nothing is enqueued, one that fits with them is taken), and a FIFO queue takes event ids of
//! up to 255 characters, deduplicating their retries, though SQS allows 128 for a
//! deduplication id.

use std::path::PathBuf;
use std::time::Duration;

use e2e_tests::{QueueOptions, TestStack};

/// SQS's limit for a message: body plus attributes.
const MAX_MESSAGE_BYTES: usize = 1_048_576;
/// The source the tests post to: unverified, its event id from `x-event-id`.
const SOURCE: &str = "acme";
/// A second source, sending the same event ids.
const OTHER_SOURCE: &str = "beta";

/// A sources file with [`SOURCE`] taking its event ids from `x-event-id`.
fn sources_file() -> PathBuf {
    let path = std::env::temp_dir().join(format!("sources-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(
        &path,
        format!(
            "[sources.{SOURCE}]\nscheme = \"none\"\nid_header = \"x-event-id\"\n\
             [sources.{OTHER_SOURCE}]\nscheme = \"none\"\nid_header = \"x-event-id\"\n"
        ),
    )
    .expect("writing the sources file");
    path
}

/// A 255-character event id (the longest allowed) starting with `prefix`.
fn long_id(prefix: &str) -> String {
    format!("{prefix}{}", "x".repeat(255 - prefix.len()))
}

/// Bytes SQS counts for the attributes ingest sends: `source` and `event_id`, each with its
/// name, its data type (`String`) and its value.
fn attribute_bytes(event_id: &str) -> usize {
    "source".len() + "event_id".len() + 2 * "String".len() + SOURCE.len() + event_id.len()
}

/// Posts `body` with event id `id` and a `Content-Type` of `quotes` double quotes (each one
/// escaped in the envelope, where the content type appears twice: 4 bytes per quote).
async fn post(ingest: &e2e_tests::Service, id: &str, quotes: usize, body: Vec<u8>) -> u16 {
    reqwest::Client::new()
        .post(ingest.url(&format!("/webhooks/{SOURCE}")))
        .header("x-event-id", id)
        .header("content-type", "\"".repeat(quotes))
        .body(body)
        .send()
        .await
        .expect("POST")
        .status()
        .as_u16()
}

/// Receives the one message on the queue, deletes it, and returns its body's length and its
/// `event_id` attribute.
async fn take_one(stack: &TestStack) -> (usize, String) {
    let output = stack
        .sqs
        .receive_message()
        .queue_url(&stack.queue_url)
        .max_number_of_messages(10)
        .message_attribute_names("All")
        .wait_time_seconds(2)
        .send()
        .await
        .expect("ReceiveMessage");
    let messages = output.messages.unwrap_or_default();
    assert_eq!(messages.len(), 1, "exactly one message on the queue");
    let message = &messages[0];
    stack
        .sqs
        .delete_message()
        .queue_url(&stack.queue_url)
        .receipt_handle(message.receipt_handle().expect("receipt handle"))
        .send()
        .await
        .expect("DeleteMessage");
    let event_id = message
        .message_attributes()
        .and_then(|attributes| attributes.get("event_id"))
        .and_then(|value| value.string_value())
        .expect("event_id attribute")
        .to_owned();
    (message.body().expect("body").len(), event_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_1_mib_only_with_its_attributes_gets_413_and_nothing_is_enqueued() {
    let stack = TestStack::new("sqs-entry-size").await;
    let sources = sources_file();
    // MAX_BODY_BYTES at its default, which is its maximum.
    let ingest = stack
        .spawn_ingest(&[("SOURCES_FILE", sources.to_str().expect("utf-8 path"))])
        .await;
    // Bodies that are not UTF-8 travel as base64: 4 envelope bytes per 3 body bytes. The
    // quotes in the content type add 4 envelope bytes each: with the largest body, the
    // envelope then comes near 1 MiB.
    let quotes = 13_000;
    let body = |len: usize| vec![0xFF_u8; len];

    // Measure the envelope around a known body (same headers, same id length, a body of the
    // same number of digits), then size the bodies of the real cases from it.
    let probe_len = 600_000;
    let probe_id = long_id("probe-");
    assert_eq!(post(&ingest, &probe_id, quotes, body(probe_len)).await, 202);
    let (probe_envelope, event_id) = take_one(&stack).await;
    assert_eq!(event_id, probe_id);
    let attributes = attribute_bytes(&probe_id);
    // The body giving an envelope of about `target` bytes (within 4, plus the few bytes the
    // timestamp's fraction may vary by).
    let body_for = |target: usize| probe_len + (target - probe_envelope) / 4 * 3;

    // An envelope within 1 MiB, but not with its attributes: refused up front.
    let over_id = long_id("over-");
    let over_len = body_for(MAX_MESSAGE_BYTES - attributes / 2);
    assert!(
        over_len <= 749_568,
        "the body ({over_len}) must be within MAX_BODY_BYTES"
    );
    let status = post(&ingest, &over_id, quotes, body(over_len)).await;
    assert_eq!(
        status,
        413,
        "an envelope of about {} bytes with {attributes} bytes of attributes",
        MAX_MESSAGE_BYTES - attributes / 2
    );
    assert_eq!(
        stack.messages_in(&stack.queue_url).await,
        0,
        "nothing enqueued"
    );

    // An envelope that fits with its attributes, within a few bytes: taken.
    let fits_id = long_id("fits-");
    let fits_len = body_for(MAX_MESSAGE_BYTES - attributes - 12);
    assert_eq!(post(&ingest, &fits_id, quotes, body(fits_len)).await, 202);
    let (envelope, event_id) = take_one(&stack).await;
    assert_eq!(event_id, fits_id);
    let size = envelope + attribute_bytes(&fits_id);
    assert!(
        (MAX_MESSAGE_BYTES - 30..=MAX_MESSAGE_BYTES).contains(&size),
        "the accepted message takes {size} bytes, just under 1 MiB"
    );

    drop(ingest);
    let _ = std::fs::remove_file(sources);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_queue_takes_255_character_event_ids_and_deduplicates_them() {
    let options = QueueOptions {
        fifo: true,
        ..QueueOptions::default()
    };
    let stack = TestStack::with_queues("sqs-entry-fifo", options).await;
    let sources = sources_file();
    let ingest = stack
        .spawn_ingest(&[("SOURCES_FILE", sources.to_str().expect("utf-8 path"))])
        .await;
    let client = reqwest::Client::new();
    let first = long_id("delivery-");
    // Same first 254 characters: a truncated deduplication id would drop it.
    let second = format!("{}y", &first[..254]);
    for id in [&first, &first, &second] {
        let response = client
            .post(ingest.url(&format!("/webhooks/{SOURCE}")))
            .header("x-event-id", id.as_str())
            .body("{}")
            .send()
            .await
            .expect("POST");
        assert_eq!(
            response.status(),
            202,
            "event id of {} characters",
            id.len()
        );
        let reply: serde_json::Value = response.json().await.expect("JSON");
        assert_eq!(reply["id"], id.as_str());
    }
    // The retry of `first` was deduplicated by SQS; `second` was not.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(stack.messages_in(&stack.queue_url).await, 2);
    let mut ids = stack.event_ids_in(&stack.queue_url).await;
    ids.sort();
    let mut expected = vec![first, second];
    expected.sort();
    assert_eq!(ids, expected);

    // Rows are keyed by (source, id): the same id from two sources is two events, and SQS's
    // queue-wide deduplication must not drop the second one after answering 202.
    for source in [SOURCE, OTHER_SOURCE] {
        let response = client
            .post(ingest.url(&format!("/webhooks/{source}")))
            .header("x-event-id", "shared-1")
            .body("{}")
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), 202);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        stack.messages_in(&stack.queue_url).await,
        4,
        "both sources' events kept"
    );

    drop(ingest);
    let _ = std::fs::remove_file(sources);
    stack.cleanup().await;
}
