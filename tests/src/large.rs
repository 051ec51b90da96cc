//! Helpers of the large-payload tests (issue 12): signed GitHub and Standard Webhooks requests
//! of any size, an `ingest` with offload on, pointer messages put on the queue directly (as
//! ingest writes them), and reading stored bodies back.

use std::collections::BTreeMap;

use aws_sdk_sqs::types::MessageAttributeValue;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{KeyInit as _, Mac as _};
use webhook_shared::envelope::Envelope;
use webhook_shared::large_payload::{ATTRIBUTE_PAYLOAD_SIZE, PayloadPointer, object_key};
use webhook_shared::sqs::{ATTRIBUTE_EVENT_ID, ATTRIBUTE_SOURCE};

use crate::{Service, TestStack};

/// The GitHub secret of the `github` source in [`sources_file`].
pub const GITHUB_SECRET: &str = "large-payload-github-secret";
/// The key bytes of the `svix` (Standard Webhooks) source in [`sources_file`].
pub const STANDARD_KEY: &[u8] = b"standard-webhooks-test-key-32byt";
/// 1 MiB.
pub const MIB: usize = 1024 * 1024;
/// The largest body ingest takes with offload on (issue 12).
pub const MAX_OFFLOADED_BODY: usize = 32 * MIB;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// A JSON document of exactly `size` bytes (at least 10) whose content depends on `seed`, so
/// that a misplaced or repeated part would not compare equal.
pub fn json_body(size: usize, seed: u64) -> Vec<u8> {
    assert!(size >= 10, "a JSON body of {size} bytes is too small");
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut body = Vec::with_capacity(size);
    body.extend_from_slice(br#"{"pad":""#);
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    while body.len() < size - 2 {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        body.push(ALPHABET[(state >> 33) as usize % ALPHABET.len()]);
    }
    body.extend_from_slice(br#""}"#);
    body
}

/// A sources file with `github` (GitHub scheme) and `svix` (Standard Webhooks), unknown
/// sources accepted unverified; returns its path.
pub fn sources_file() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("sources-large-{}.toml", uuid::Uuid::new_v4()));
    let text = r#"unknown_sources = "accept"

[sources.github]
scheme = "github"
secret_env = ["GITHUB_SECRET"]

[sources.svix]
scheme = "standard_webhooks"
secret_env = ["STANDARD_SECRET"]
"#;
    std::fs::write(&path, text).expect("writing the sources file");
    path
}

/// Starts ingest with offload to `bucket`, the [`sources_file`] and its secrets, plus
/// `extra` settings (they come last, so they may override these).
pub async fn spawn_offloading_ingest(
    stack: &TestStack,
    bucket: &str,
    extra: &[(&str, &str)],
) -> Service {
    let sources = sources_file();
    let secret = format!("whsec_{}", BASE64.encode(STANDARD_KEY));
    let mut settings = vec![
        ("LARGE_PAYLOAD_BUCKET", bucket),
        ("SOURCES_FILE", sources.to_str().expect("utf-8 path")),
        ("GITHUB_SECRET", GITHUB_SECRET),
        ("STANDARD_SECRET", secret.as_str()),
    ];
    settings.extend_from_slice(extra);
    stack.spawn_ingest(&settings).await
}

/// A GitHub-signed POST of `body` to `/webhooks/github` with delivery id `id`.
pub fn github_request(
    client: &reqwest::Client,
    ingest: &Service,
    id: &str,
    body: Vec<u8>,
) -> reqwest::RequestBuilder {
    let signature = format!(
        "sha256={}",
        hex::encode(hmac(GITHUB_SECRET.as_bytes(), &[&body]))
    );
    client
        .post(ingest.url("/webhooks/github"))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", id)
        .header("x-hub-signature-256", signature)
        .body(body)
}

/// A Standard-Webhooks-signed POST of `body` to `/webhooks/svix` with message id `id`.
pub fn standard_request(
    client: &reqwest::Client,
    ingest: &Service,
    id: &str,
    body: Vec<u8>,
) -> reqwest::RequestBuilder {
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let signature = hmac(
        STANDARD_KEY,
        &[id.as_bytes(), b".", timestamp.as_bytes(), b".", &body],
    );
    client
        .post(ingest.url("/webhooks/svix"))
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp)
        .header(
            "webhook-signature",
            format!("v1,{}", BASE64.encode(signature)),
        )
        .body(body)
}

/// An envelope for `source` and `id` with `body`, as ingest would make it.
pub fn envelope(source: &str, id: &str, body: Vec<u8>) -> Envelope {
    Envelope {
        id: id.to_owned(),
        source: source.to_owned(),
        received_at: chrono::Utc::now(),
        headers: BTreeMap::from([("content-type".to_owned(), "application/json".to_owned())]),
        content_type: Some("application/json".to_owned()),
        body: bytes::Bytes::from(body),
    }
}

fn string_attribute(value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .expect("type and value set")
}

impl TestStack {
    /// Sends a pointer to `bucket`/`key` to the main queue as ingest writes it: the
    /// extended clients' pointer body, `source` and `event_id`, and `ExtendedPayloadSize`.
    pub async fn send_pointer(&self, bucket: &str, key: &str, envelope: &Envelope, size: usize) {
        let pointer = PayloadPointer {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        };
        self.sqs
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(pointer.to_json())
            .message_attributes(ATTRIBUTE_SOURCE, string_attribute(&envelope.source))
            .message_attributes(ATTRIBUTE_EVENT_ID, string_attribute(&envelope.id))
            .message_attributes(
                ATTRIBUTE_PAYLOAD_SIZE,
                MessageAttributeValue::builder()
                    .data_type("Number")
                    .string_value(size.to_string())
                    .build()
                    .expect("type and value set"),
            )
            .send()
            .await
            .expect("SendMessage (pointer)");
    }

    /// Stores `envelope` as an object in `bucket` under its usual key and sends its pointer:
    /// what ingest does for a large webhook. Returns the key.
    pub async fn offload(&self, bucket: &str, envelope: &Envelope) -> String {
        let key = object_key(&envelope.source, &envelope.id);
        let json = envelope.to_json();
        let size = json.len();
        self.put_object(bucket, &key, json).await;
        self.send_pointer(bucket, &key, envelope, size).await;
        key
    }

    /// The stored body of event (`source`, `id`), if there is a row.
    pub async fn stored_body(&self, source: &str, id: &str) -> Option<Vec<u8>> {
        sqlx::query_scalar("SELECT body FROM webhook_events WHERE source = $1 AND id = $2")
            .bind(source)
            .bind(id)
            .fetch_optional(&self.db)
            .await
            .expect("reading a stored body")
    }
}
