//! Per-source settings of the sources file, through the real binaries: event ids derived
//! from the body (`event_id`), so that a provider's retry without an id is stored once, and
//! credential headers (built-in and `drop_headers`) that never reach the queue.

use std::collections::BTreeSet;
use std::time::Duration;

use e2e_tests::TestStack;
use hmac::{KeyInit as _, Mac as _};
use sha2::{Digest as _, Sha256};

const GITHUB_SECRET: &str = "It's a Secret to Everybody";

const SOURCES: &str = r#"unknown_sources = "reject"

[sources.plain]
scheme = "none"
id_header = "x-delivery"
event_id = "body_sha256"

[sources.github]
scheme = "github"
secret_env = ["GITHUB_SECRET"]
event_id = "body_sha256_always"

[sources.gitlab]
scheme = "none"
drop_headers = ["X-My-Token"]
"#;

async fn spawn(stack: &TestStack) -> e2e_tests::Service {
    let path = std::env::temp_dir().join(format!("sources-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&path, SOURCES).expect("writing the sources file");
    stack
        .spawn_ingest(&[
            ("SOURCES_FILE", path.to_str().expect("utf-8 path")),
            ("GITHUB_SECRET", GITHUB_SECRET),
        ])
        .await
}

/// The id ingest documents for a body-derived event: `sha256:` and the hex SHA-256 of the
/// source, a zero byte and the body.
fn derived_id(source: &str, body: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(source.as_bytes());
    hash.update([0]);
    hash.update(body);
    format!("sha256:{}", hex::encode(hash.finalize()))
}

fn github_signature(body: &[u8]) -> String {
    let mut mac =
        hmac::Hmac::<Sha256>::new_from_slice(GITHUB_SECRET.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// POSTs `body` to `url` with `headers`, expects 202 and returns the id ingest answered.
async fn post(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> String {
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("POST webhook");
    assert_eq!(response.status(), 202, "{:?}", response.text().await);
    let reply: serde_json::Value = response.json().await.expect("JSON reply");
    reply["id"].as_str().expect("reply has an id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_without_an_id_gets_the_same_id_and_is_stored_once() {
    let stack = TestStack::new("event-ids").await;
    let ingest = spawn(&stack).await;
    let worker = stack.spawn_worker(&[]).await;
    let client = reqwest::Client::new();
    let plain = ingest.url("/webhooks/plain");
    let (first, second) = (br#"{"order":1}"#, br#"{"order":2}"#);

    // A send and the provider's retry of it, neither with an id: one id.
    let sent = post(&client, &plain, &[], first).await;
    let retried = post(&client, &plain, &[], first).await;
    assert_eq!(sent, derived_id("plain", first));
    assert_eq!(retried, sent, "a retry of the same body gets the same id");
    // Another body, another id.
    let other = post(&client, &plain, &[], second).await;
    assert_eq!(other, derived_id("plain", second));
    assert_ne!(other, sent);
    // A provider id, when sent, still wins.
    let provided = post(&client, &plain, &[("x-delivery", "d-1")], first).await;
    assert_eq!(provided, "d-1");

    // `body_sha256_always`: a replay of a signed GitHub delivery under a new delivery id
    // (that header is not signed) still gets the body's id.
    let github = ingest.url("/webhooks/github");
    let push = br#"{"ref":"refs/heads/main","after":"6113728f27ae82c7b1a177c8d03f9e96e0adf246"}"#;
    let signature = github_signature(push);
    let delivered = post(
        &client,
        &github,
        &[
            ("x-github-delivery", "a-1"),
            ("x-hub-signature-256", &signature),
        ],
        push,
    )
    .await;
    let replayed = post(
        &client,
        &github,
        &[
            ("x-github-delivery", "b-2"),
            ("x-hub-signature-256", &signature),
        ],
        push,
    )
    .await;
    assert_eq!(delivered, derived_id("github", push));
    assert_eq!(replayed, delivered);

    // Six messages were accepted; four distinct events are stored.
    stack.wait_for_rows(4, Duration::from_secs(60)).await;
    stack
        .wait_for_empty(&stack.queue_url, Duration::from_secs(60))
        .await;
    let stored: Vec<(String, String)> =
        sqlx::query_as("SELECT source, id FROM webhook_events ORDER BY source, id")
            .fetch_all(&stack.db)
            .await
            .expect("reading rows");
    let expected = BTreeSet::from([
        ("github".to_owned(), delivered),
        ("plain".to_owned(), sent),
        ("plain".to_owned(), other),
        ("plain".to_owned(), provided),
    ]);
    assert_eq!(
        stored.len(),
        expected.len(),
        "one row per event: {stored:?}"
    );
    assert_eq!(stored.into_iter().collect::<BTreeSet<_>>(), expected);
    assert_eq!(stack.messages_in(&stack.dlq_url).await, 0);
    drop((ingest, worker));
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_headers_never_reach_the_queue() {
    let stack = TestStack::new("drop-headers").await;
    let ingest = spawn(&stack).await;
    let client = reqwest::Client::new();
    let secrets = [
        ("X-Gitlab-Token", "gitlab-token-value"),
        ("X-My-Token", "configured-token-value"),
        ("X-Hook-Secret", "asana-secret-value"),
        ("Authorization", "Bearer bearer-value"),
    ];
    let mut headers = vec![("X-Gitlab-Event", "Push Hook")];
    headers.extend(secrets);
    post(
        &client,
        &ingest.url("/webhooks/gitlab"),
        &headers,
        br#"{"object_kind":"push"}"#,
    )
    .await;

    let messages = stack.receive_all(&stack.queue_url).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    let envelope: serde_json::Value =
        serde_json::from_str(&messages[0]).expect("messages are envelopes");
    let kept = envelope["headers"]
        .as_object()
        .expect("envelopes have headers");
    assert_eq!(kept.get("x-gitlab-event"), Some(&"Push Hook".into()));
    for (name, value) in secrets {
        let name = name.to_ascii_lowercase();
        assert!(!kept.contains_key(&name), "{name} was kept: {kept:?}");
        assert!(!messages[0].contains(value), "{value} in {}", messages[0]);
    }
    drop(ingest);
    stack.cleanup().await;
}
