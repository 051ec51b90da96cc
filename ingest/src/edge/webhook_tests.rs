//! The webhook handler in-process, through the router, against a fake publisher (see
//! [`testing`](crate::edge::testing)): limits, verification, the memory budget, body
//! timeouts and error mapping, in milliseconds (paused time where a deadline matters).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use webhook_shared::envelope::Envelope;

use crate::body::budget::body_budget;
use crate::body::pace::MinRate;
use crate::edge::routes::route;
use crate::edge::testing::{Chunks, chunks, post, send, sources_from, state};
use crate::sources::Sources;

#[tokio::test]
async fn an_accepted_webhook_is_enqueued_once_with_its_exact_body() {
    let state = state(Sources::open());
    let (status, answer) = send(&state, post("/webhooks/github", r#"{"a":1}"#)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let taken = state.publisher.taken();
    assert_eq!(taken.len(), 1);
    assert_eq!(answer["id"], taken[0].event_id.as_str());
    let envelope = Envelope::from_json(&taken[0].body).expect("an envelope");
    assert_eq!(envelope.source, "github");
    assert_eq!(&envelope.body[..], br#"{"a":1}"#);
}

#[tokio::test]
async fn bad_requests_get_their_status_and_code_and_enqueue_nothing() {
    let state = state(Sources::open());
    let too_big_declared = Request::post("/webhooks/github")
        .header("content-length", "1001")
        .body(chunks(0, 0, true))
        .expect("valid request");
    let cases: Vec<(Request<Chunks>, StatusCode, &str)> = vec![
        (
            too_big_declared,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            Request::post("/webhooks/github")
                .body(chunks(11, 100, true))
                .expect("valid request"),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            Request::get("/webhooks/github")
                .body(chunks(0, 0, true))
                .expect("valid request"),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Request::post("/webhooks/GitHub")
                .body(chunks(1, 10, true))
                .expect("valid request"),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Request::post("/elsewhere")
                .body(chunks(1, 10, true))
                .expect("valid request"),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Request::post("/readyz")
                .body(chunks(0, 0, true))
                .expect("valid request"),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (request, status, code) in cases {
        let what = format!("{} {}", request.method(), request.uri());
        let (got, answer) = send(&state, request).await;
        assert_eq!(got, status, "{what}");
        assert_eq!(answer["error"], code, "{what}");
        assert!(
            answer["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    }
    assert!(state.publisher.taken().is_empty(), "nothing enqueued");
}

#[tokio::test]
async fn verification_and_content_rules_refuse_before_enqueueing() {
    let state = state(sources_from(
        r#"
        [sources.github]
        scheme = "github"
        secret_env = ["GITHUB_SECRET"]
        require_json = true
        "#,
    ));
    let unsigned = Request::post("/webhooks/github")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{}")))
        .expect("valid request");
    let (status, answer) = send(&state, unsigned).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer["error"], "missing_signature");

    let not_json = post("/webhooks/github", "{}");
    let (status, answer) = send(&state, not_json).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(answer["error"], "unsupported_media_type");

    let (status, answer) = send(&state, post("/webhooks/gitlab", "{}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "unknown sources are refused");
    assert_eq!(answer["error"], "unknown_source");
    assert!(state.publisher.taken().is_empty());
}

#[tokio::test]
async fn a_refusing_queue_gives_503_with_retry_after() {
    let state = state(Sources::open());
    state.publisher.refuse.store(true, Ordering::Relaxed);
    let response = route(Arc::clone(&state), post("/webhooks/github", "{}")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "7");
}

#[tokio::test]
async fn a_source_beyond_its_quota_gets_429_with_retry_after_and_nothing_is_enqueued() {
    let state = state(sources_from(
        "unknown_sources = \"accept\"\n\
         unknown_quota = { per_second = 0.5, burst = 1 }\n\
         [sources.flood]\nscheme = \"none\"\nquota = { per_second = 0.5, burst = 2 }\n\
         [sources.quiet]\nscheme = \"none\"\n",
    ));
    let status = |path: &'static str| {
        let state = Arc::clone(&state);
        async move { route(state, post(path, "{}")).await }
    };
    assert_eq!(
        status("/webhooks/flood").await.status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        status("/webhooks/flood").await.status(),
        StatusCode::ACCEPTED
    );
    let refused = status("/webhooks/flood").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["retry-after"], "2");
    // Another source keeps its own room; unknown sources share theirs.
    assert_eq!(
        status("/webhooks/quiet").await.status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        status("/webhooks/other-1").await.status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        status("/webhooks/other-2").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let (_, answer) = send(&state, post("/webhooks/flood", "{}")).await;
    assert_eq!(answer["error"], "rate_limited");
    let sources: Vec<String> = state
        .publisher
        .taken()
        .into_iter()
        .map(|message| message.source)
        .collect();
    assert_eq!(sources, ["flood", "flood", "quiet", "other-1"]);
}

#[tokio::test(start_paused = true)]
async fn a_stalled_queue_gives_503_at_the_send_timeout() {
    let state = state(Sources::open());
    state.publisher.stall.store(true, Ordering::Relaxed);
    let started = tokio::time::Instant::now();
    let response = route(Arc::clone(&state), post("/webhooks/github", "{}")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(3),
        "at the send timeout, not later"
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_that_stops_coming_gets_408_at_the_body_timeout() {
    let state = state(Sources::open());
    let request = Request::post("/webhooks/github")
        .body(chunks(2, 10, false))
        .expect("valid request");
    let started = tokio::time::Instant::now();
    let (status, answer) = send(&state, request).await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(answer["error"], "request_timeout");
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert!(state.publisher.taken().is_empty());
}

#[tokio::test]
async fn a_body_the_budget_has_no_room_for_gets_503_overloaded_without_a_read_past_it() {
    let mut state = state(Sources::open());
    Arc::get_mut(&mut state)
        .expect("not shared yet")
        .body_budget = body_budget(500);
    // Declares 600 with room for 500: refused from the head alone.
    let request = Request::post("/webhooks/github")
        .header("content-length", "600")
        .body(chunks(6, 100, false)) // never ends: a read would hang the test
        .expect("valid request");
    let response = route(Arc::clone(&state), request).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "7");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let answer: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(answer["error"], "overloaded");
    // Without a declared length, the chunk that finds no room is refused.
    let request = Request::post("/webhooks/github")
        .body(chunks(6, 100, false))
        .expect("valid request");
    let (status, answer) = send(&state, request).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer["error"], "overloaded");
    assert_eq!(
        state.body_budget.in_use(),
        0,
        "nothing held after the answer"
    );
    assert!(state.publisher.taken().is_empty());
}

#[tokio::test]
async fn a_stalled_body_holds_only_what_it_sent_so_others_still_get_in() {
    let mut state = state(Sources::open());
    Arc::get_mut(&mut state)
        .expect("not shared yet")
        .body_budget = body_budget(300_000);
    // Ten clients declare 1000 bytes each, send 10 and stall (10,000 declared in all).
    let mut stalled = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let request = Request::post("/webhooks/github")
            .header("content-length", "1000")
            .body(chunks(1, 10, false))
            .expect("valid request");
        stalled.spawn(route(Arc::clone(&state), request));
    }
    while state.body_budget.in_use() < 100 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(state.body_budget.in_use(), 100, "10 bytes each, as sent");
    let (status, _) = send(&state, post("/webhooks/github", vec![b'x'; 900])).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    stalled.abort_all();
    while stalled.join_next().await.is_some() {}
    assert_eq!(state.body_budget.in_use(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_body_slower_than_the_minimum_rate_gets_408_and_closes_the_connection() {
    let mut state = state(Sources::open());
    let inner = Arc::get_mut(&mut state).expect("not shared yet");
    inner.body_read_timeout = Duration::from_secs(30);
    inner.min_body_rate = MinRate {
        bytes_per_second: std::num::NonZeroU32::new(1000),
        grace: Duration::from_secs(3),
    };
    let request = Request::post("/webhooks/github")
        .header("content-length", "900")
        .body(chunks(1, 100, false))
        .expect("valid request");
    let started = tokio::time::Instant::now();
    let response = route(Arc::clone(&state), request).await;
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(response.headers()["connection"], "close");
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(3),
        "at the end of the grace period, not at the body read timeout"
    );
    assert_eq!(state.body_budget.in_use(), 0);
    assert!(state.publisher.taken().is_empty());
}
