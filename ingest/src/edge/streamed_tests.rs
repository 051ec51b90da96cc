//! The S3 path in-process, through the router: large bodies streamed to a fake store
//! ([`testing`](crate::offload::testing)) in parts, verified on the way, published as
//! pointers; and every failure leaving nothing stored or enqueued.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, KeyInit as _, Mac as _};
use http::{Request, StatusCode};
use http_body_util::Full;
use sha2::Sha256;
use webhook_shared::envelope::Envelope;
use webhook_shared::large_payload::PayloadPointer;

use crate::edge::routes::route;
use crate::edge::state::AppState;
use crate::edge::testing::{Chunks, FakeQueue, send, sources_from, state};
use crate::offload::testing::{FakePayloadStore, SharedFakePayloadStore};
use crate::offload::{LargePayloads, PART_BYTES};
use crate::sources::Sources;

const THRESHOLD: usize = 1000;
const LIMIT: usize = 8 * 1024 * 1024;

/// A state that offloads bodies over 1000 bytes, up to 8 MiB, to a fake store.
fn offloading(sources: Sources) -> (Arc<AppState<FakeQueue>>, Arc<FakePayloadStore>) {
    let store = SharedFakePayloadStore::default();
    let fake = Arc::clone(&store.0);
    let mut state = state(sources);
    let inner = Arc::get_mut(&mut state).expect("not shared yet");
    inner.max_body_bytes = LIMIT;
    inner.body_budget = crate::body::budget::body_budget(64 * 1024 * 1024);
    inner.body_read_timeout = Duration::from_secs(30);
    inner.large_payloads = Some(LargePayloads::new(
        Arc::new(store),
        THRESHOLD,
        2 * PART_BYTES,
        Duration::from_secs(5),
    ));
    (state, fake)
}

fn github() -> Sources {
    sources_from(
        r#"
        [sources.github]
        scheme = "github"
        secret_env = ["GITHUB_SECRET"]
        "#,
    )
}

fn body_of(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn github_signature(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(b"secret").expect("any key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A GitHub delivery of `body` in 64 KiB chunks, without a declared length.
fn github_request(body: &[u8], signature: &str) -> Request<Chunks> {
    let chunks: VecDeque<Bytes> = body.chunks(64 * 1024).map(Bytes::copy_from_slice).collect();
    Request::post("/webhooks/github")
        .header("x-hub-signature-256", signature)
        .header("x-github-delivery", "d-42")
        .body(Chunks { chunks, ends: true })
        .expect("valid request")
}

#[tokio::test]
async fn a_large_body_streams_in_parts_and_is_published_as_a_pointer() {
    let (state, store) = offloading(github());
    let body = body_of(6 * 1024 * 1024);
    let (status, answer) = send(&state, github_request(&body, &github_signature(&body))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["id"], "d-42");
    assert_eq!(
        store.calls(),
        [
            "CreateMultipartUpload",
            "UploadPart",
            "UploadPart",
            "CompleteMultipartUpload"
        ],
        "8 MiB of base64: one 5 MiB part and the rest"
    );
    let objects = store.objects();
    let object = objects
        .get("github/d-42")
        .expect("the object, keyed by delivery");
    let envelope =
        Envelope::from_json(std::str::from_utf8(object).expect("JSON")).expect("an envelope");
    assert_eq!(envelope.body, body, "byte for byte");
    assert_eq!(envelope.id, "d-42");
    assert_eq!(envelope.source, "github");
    let taken = state.publisher.taken();
    assert_eq!(taken.len(), 1);
    let message = &taken[0];
    assert_eq!(
        PayloadPointer::from_json(&message.body).expect("a pointer"),
        PayloadPointer {
            bucket: "payloads".to_owned(),
            key: "github/d-42".to_owned()
        }
    );
    assert_eq!(
        message.extended_payload_size.map(u64::from),
        Some(object.len() as u64)
    );
    assert_eq!(message.event_id, "d-42");
    let names: Vec<&str> = message.attributes().iter().map(|a| a.name).collect();
    assert_eq!(names, ["source", "event_id", "ExtendedPayloadSize"]);
    assert_eq!(
        state.body_budget.in_use(),
        0,
        "nothing held after the answer"
    );
}

#[tokio::test]
async fn an_object_within_one_part_is_put_in_one_call() {
    let (state, store) = offloading(github());
    let body = body_of(100_000);
    let request = github_request(&body, &github_signature(&body));
    assert_eq!(send(&state, request).await.0, StatusCode::ACCEPTED);
    assert_eq!(store.calls(), ["PutObject"]);
    assert_eq!(state.publisher.taken().len(), 1);
}

#[tokio::test]
async fn a_bad_signature_on_a_streamed_body_gets_401_and_the_upload_is_aborted() {
    let (state, store) = offloading(github());
    let body = body_of(6 * 1024 * 1024);
    let signature = github_signature(b"another body");
    let (status, answer) = send(&state, github_request(&body, &signature)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer["error"], "invalid_signature");
    assert_eq!(store.calls().last(), Some(&"AbortMultipartUpload"));
    assert!(store.objects().is_empty());
    assert!(state.publisher.taken().is_empty());
    // A missing signature fails before any S3 call.
    let (state, store) = offloading(github());
    let unsigned = Request::post("/webhooks/github")
        .header("content-length", "5000")
        .body(Full::new(Bytes::from(body_of(5000))))
        .expect("valid request");
    assert_eq!(send(&state, unsigned).await.0, StatusCode::UNAUTHORIZED);
    assert!(store.calls().is_empty());
}

#[tokio::test]
async fn an_s3_failure_gets_503_with_retry_after_and_aborts_the_upload() {
    let (state, store) = offloading(github());
    *store.fail.lock().expect("not poisoned") = Some("UploadPart");
    let body = body_of(6 * 1024 * 1024);
    let response = route(
        Arc::clone(&state),
        github_request(&body, &github_signature(&body)),
    )
    .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "7");
    assert_eq!(
        store.calls(),
        [
            "CreateMultipartUpload",
            "UploadPart",
            "AbortMultipartUpload"
        ]
    );
    assert!(store.objects().is_empty());
    assert!(state.publisher.taken().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_frozen_s3_gets_503_at_the_s3_timeout() {
    let (state, store) = offloading(github());
    *store.fail.lock().expect("not poisoned") = Some("PutObject");
    store.stall.store(true, Ordering::Relaxed);
    let body = body_of(100_000);
    let started = tokio::time::Instant::now();
    let (status, answer) = send(&state, github_request(&body, &github_signature(&body))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer["error"], "storage_unavailable");
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert!(state.publisher.taken().is_empty());
}

#[tokio::test]
async fn a_queue_failure_after_the_upload_gets_503_and_leaves_the_object_to_the_lifecycle_rule() {
    let (state, store) = offloading(github());
    state.publisher.refuse.store(true, Ordering::Relaxed);
    let body = body_of(6 * 1024 * 1024);
    let (status, answer) = send(&state, github_request(&body, &github_signature(&body))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer["error"], "queue_unavailable");
    // Deleting it could turn a pointer that SQS accepts after the deadline into poison.
    assert!(!store.calls().contains(&"DeleteObject"));
    assert_eq!(store.objects().len(), 1, "the object stays");
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413_and_leaves_nothing() {
    let (state, store) = offloading(Sources::open());
    let declared = Request::post("/webhooks/github")
        .header("content-length", (LIMIT + 1).to_string())
        .body(Chunks {
            chunks: VecDeque::new(),
            ends: false, // never read
        })
        .expect("valid request");
    let (status, answer) = send(&state, declared).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer["error"], "payload_too_large");
    assert!(store.calls().is_empty(), "nothing uploaded");

    let body = body_of(LIMIT + 1);
    let chunked = github_request(&body, "unsigned source: not read");
    let (status, _) = send(&state, chunked).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(store.calls().last(), Some(&"AbortMultipartUpload"));
    assert!(store.objects().is_empty());
    assert!(state.publisher.taken().is_empty());
}

#[tokio::test]
async fn a_stripe_event_id_is_found_in_a_streamed_body() {
    let sources = sources_from(
        r#"
        [sources.stripe]
        scheme = "stripe"
        secret_env = ["STRIPE_SECRET"]
        "#,
    );
    let (state, store) = offloading(sources);
    let padding = "x".repeat(2 * 1024 * 1024);
    let body = format!(r#"{{"id":"evt_1Big","object":"event","data":"{padding}"}}"#);
    let t = chrono::Utc::now().timestamp();
    let mut mac = Hmac::<Sha256>::new_from_slice(b"secret").expect("any key");
    mac.update(format!("{t}.{body}").as_bytes());
    let signature = format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()));
    let request = Request::post("/webhooks/stripe")
        .header("stripe-signature", signature)
        .body(Full::new(Bytes::from(body.clone())))
        .expect("valid request");
    let (status, answer) = send(&state, request).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["id"], "evt_1Big");
    let objects = store.objects();
    let (key, object) = objects.iter().next().expect("one object");
    assert!(key.starts_with("stripe/"), "a UUIDv7 key: {key}");
    let envelope =
        Envelope::from_json(std::str::from_utf8(object).expect("JSON")).expect("envelope");
    assert_eq!(envelope.id, "evt_1Big");
    assert_eq!(envelope.body, body.as_bytes());
    let encoded = base64::engine::general_purpose::STANDARD.encode(body.as_bytes());
    assert!(
        std::str::from_utf8(object)
            .expect("JSON")
            .contains(&encoded)
    );
}

#[tokio::test]
async fn a_stalled_streamed_body_holds_no_part_buffer_and_a_flowing_one_fills_parts_there() {
    let (mut state, store) = offloading(Sources::open());
    Arc::get_mut(&mut state)
        .expect("not shared yet")
        .body_budget = crate::body::budget::body_budget(4 * 1024 * 1024);
    // Declares 2 MB, sends 1 KiB, stalls: it holds that KiB (and the envelope's start and the
    // encoder's output for it) and its connection's read buffer, no part buffer, and no 5 MiB
    // of the budget.
    let stalled = Request::post("/webhooks/github")
        .header("content-length", "2000000")
        .body(Chunks {
            chunks: VecDeque::from([Bytes::from(vec![b'x'; 1024])]),
            ends: false,
        })
        .expect("valid request");
    let stalled = tokio::spawn(route(Arc::clone(&state), stalled));
    while state.body_budget.in_use() == 0 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let held = state.body_budget.in_use();
    // What it sent, and the 64 KiB its connection's read buffer may hold while it streams.
    assert!((64 * 1024..72 * 1024).contains(&held), "holds {held} bytes");
    let offload = state.large_payloads.as_ref().expect("offloading");
    assert_eq!(
        offload.part_buffers.available_permits(),
        offload.part_buffer_bytes,
        "no part buffer taken"
    );
    stalled.abort();
    let _ = stalled.await;
    assert_eq!(state.body_budget.in_use(), 0);
    // A body that keeps coming takes a part buffer past its first 64 KiB: its 5 MiB parts
    // count there, not in the (small) body budget, and it is accepted.
    let body = body_of(6 * 1024 * 1024);
    let (status, answer) = send(&state, github_request(&body, "unsigned source")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(store.objects().len(), 1);
    assert_eq!(state.body_budget.in_use(), 0);
    assert_eq!(
        offload.part_buffers.available_permits(),
        offload.part_buffer_bytes,
        "the part buffer given back"
    );
}

#[tokio::test(start_paused = true)]
async fn a_streamed_body_slower_than_the_minimum_rate_gets_408_and_its_upload_is_aborted() {
    let (mut state, store) = offloading(Sources::open());
    Arc::get_mut(&mut state)
        .expect("not shared yet")
        .min_body_rate = crate::body::pace::MinRate {
        bytes_per_second: std::num::NonZeroU32::new(1024 * 1024),
        grace: Duration::from_secs(2),
    };
    // 6 MiB at once (a part is uploaded), then nothing: 6 MiB pays for 6 s at 1 MiB/s.
    let request = Request::post("/webhooks/github")
        .body(Chunks {
            chunks: VecDeque::from([Bytes::from(body_of(6 * 1024 * 1024))]),
            ends: false,
        })
        .expect("valid request");
    let started = tokio::time::Instant::now();
    let (status, answer) = send(&state, request).await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(answer["error"], "request_timeout");
    assert_eq!(started.elapsed(), Duration::from_secs(6));
    assert_eq!(store.calls().last(), Some(&"AbortMultipartUpload"));
    assert!(store.objects().is_empty());
    assert_eq!(state.body_budget.in_use(), 0);
}
