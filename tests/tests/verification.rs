//! Signature verification through the real ingest binary: signed webhooks pass and carry
//! the provider's id, bad ones get 401 and enqueue nothing, unknown sources follow the
//! setting, and a provider's retry of one delivery is stored once.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use e2e_tests::TestStack;
use hmac::{KeyInit as _, Mac as _};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

const GITHUB_SECRET: &str = "It's a Secret to Everybody";
/// A Standard Webhooks secret: `whsec_` + base64 of the key bytes.
const STANDARD_KEY: &[u8] = b"standard-webhooks-test-key-32byt";

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

fn github_signature(body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(hmac(GITHUB_SECRET.as_bytes(), &[body]))
    )
}

fn sources_file(unknown: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("sources-{}.toml", uuid::Uuid::new_v4()));
    let text = format!(
        r#"unknown_sources = "{unknown}"

[sources.github]
scheme = "github"
secret_env = ["GITHUB_SECRET_OLD", "GITHUB_SECRET"]
require_json = true

[sources.svix]
scheme = "standard_webhooks"
secret_env = ["STANDARD_SECRET"]
"#
    );
    std::fs::write(&path, text).expect("writing the sources file");
    path
}

async fn spawn(stack: &TestStack, unknown: &str) -> e2e_tests::Service {
    let path = sources_file(unknown);
    let secret = format!("whsec_{}", BASE64.encode(STANDARD_KEY));
    stack
        .spawn_ingest(&[
            ("SOURCES_FILE", path.to_str().expect("utf-8 path")),
            (
                "GITHUB_SECRET_OLD",
                "an older secret, rotated out at the provider",
            ),
            ("GITHUB_SECRET", GITHUB_SECRET),
            ("STANDARD_SECRET", &secret),
        ])
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_webhooks_pass_and_bad_ones_enqueue_nothing() {
    let stack = TestStack::new("verify").await;
    let ingest = spawn(&stack, "reject").await;
    let client = reqwest::Client::new();
    let body = br#"{"action":"opened"}"#;

    let github = |body: &'static [u8], signature: String| {
        client
            .post(ingest.url("/webhooks/github"))
            .header("content-type", "application/json")
            .header("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
            .header("x-hub-signature-256", signature)
            .body(body)
    };
    let valid = github(body, github_signature(body))
        .send()
        .await
        .expect("POST");
    assert_eq!(valid.status(), 202);
    let reply: serde_json::Value = valid.json().await.expect("JSON");
    assert_eq!(
        reply["id"], "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "the provider's delivery id is the event id"
    );

    let tampered = github(br#"{"action":"closed"}"#, github_signature(body))
        .send()
        .await
        .expect("POST");
    assert_eq!(tampered.status(), 401);
    let error: serde_json::Value = tampered.json().await.expect("JSON");
    assert_eq!(error["error"], "invalid_signature");
    let unsigned = client
        .post(ingest.url("/webhooks/github"))
        .header("content-type", "application/json")
        .body(&body[..])
        .send()
        .await
        .expect("POST");
    assert_eq!(unsigned.status(), 401);
    let not_json = client
        .post(ingest.url("/webhooks/github"))
        .header("content-type", "text/plain")
        .body("hi")
        .send()
        .await
        .expect("POST");
    assert_eq!(not_json.status(), 415, "github requires JSON here");

    // Standard Webhooks: fresh timestamp passes, a stale one does not.
    let standard = |timestamp: i64| {
        let id = format!("msg_{timestamp}");
        let signature = hmac(
            STANDARD_KEY,
            &[
                id.as_bytes(),
                b".",
                timestamp.to_string().as_bytes(),
                b".",
                body,
            ],
        );
        client
            .post(ingest.url("/webhooks/svix"))
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                format!("v1,{}", BASE64.encode(signature)),
            )
            .body(&body[..])
    };
    let now = chrono::Utc::now().timestamp();
    assert_eq!(standard(now).send().await.expect("POST").status(), 202);
    let stale = standard(now - 600).send().await.expect("POST");
    assert_eq!(stale.status(), 401);
    assert_eq!(
        stale.json::<serde_json::Value>().await.expect("JSON")["error"],
        "stale_timestamp"
    );

    let unknown = client
        .post(ingest.url("/webhooks/elsewhere"))
        .body("{}")
        .send()
        .await
        .expect("POST");
    assert_eq!(unknown.status(), 404);
    assert_eq!(
        unknown.json::<serde_json::Value>().await.expect("JSON")["error"],
        "unknown_source"
    );

    let mut queued = stack.event_ids_in(&stack.queue_url).await;
    queued.sort();
    assert_eq!(
        queued,
        vec![
            "72d3162e-cc78-11e3-81ab-4c9367dc0958".to_owned(),
            format!("msg_{now}")
        ]
    );
    drop(ingest);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sources_are_taken_unverified_when_allowed() {
    let stack = TestStack::new("verify-accept").await;
    let ingest = spawn(&stack, "accept").await;
    let response = reqwest::Client::new()
        .post(ingest.url("/webhooks/elsewhere"))
        .body("anything")
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 202);
    assert_eq!(stack.messages_in(&stack.queue_url).await, 1);
    drop(ingest);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_providers_retry_of_one_delivery_is_stored_once() {
    let stack = TestStack::new("verify-dedup").await;
    let ingest = spawn(&stack, "reject").await;
    let worker = stack.spawn_worker(&[]).await;
    let body = br#"{"zen":"Keep it logically awesome."}"#;
    for _ in 0..3 {
        let response = reqwest::Client::new()
            .post(ingest.url("/webhooks/github"))
            .header("content-type", "application/json")
            .header("x-github-delivery", "delivery-retried-3-times")
            .header("x-hub-signature-256", github_signature(body))
            .body(&body[..])
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), 202);
    }
    stack
        .wait_for_empty(&stack.queue_url, Duration::from_secs(30))
        .await;
    let rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM webhook_events WHERE id = 'delivery-retried-3-times'",
    )
    .fetch_one(&stack.db)
    .await
    .expect("count");
    assert_eq!(rows, 1);
    assert!(
        worker
            .metrics()
            .await
            .contains(r#"webhook_worker_messages_total{outcome="duplicate"} 2"#)
    );
    drop((ingest, worker));
    stack.cleanup().await;
}
