//! ingest against real LocalStack: limits and errors enqueue nothing, concurrent webhooks
//! share SendMessageBatch calls, HTTP/2 works, SIGTERM under load loses nothing, and an
//! unreachable SQS gives 503.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use e2e_tests::probes::gauge;
use e2e_tests::report::counter;
use e2e_tests::{QueueOptions, TestStack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_status_and_enqueue_nothing() {
    let stack = TestStack::new("ingest-errors").await;
    let ingest = stack
        .spawn_ingest(&[
            ("MAX_BODY_BYTES", "1000"),
            ("BODY_READ_TIMEOUT_SECONDS", "1"),
            // The minimum-rate grace may not outlast the read timeout.
            ("BODY_RATE_GRACE_SECONDS", "1"),
        ])
        .await;
    let client = reqwest::Client::new();

    let at_limit = client
        .post(ingest.url("/webhooks/github"))
        .body(vec![b'a'; 1000])
        .send()
        .await
        .expect("POST");
    assert_eq!(
        at_limit.status(),
        202,
        "a body of exactly MAX_BODY_BYTES is accepted"
    );

    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            client
                .post(ingest.url("/webhooks/github"))
                .body(vec![b'a'; 1001]),
            413,
            "payload_too_large",
        ),
        (
            // No Content-Length: the limit is enforced while streaming.
            client
                .post(ingest.url("/webhooks/github"))
                .body(reqwest::Body::wrap_stream(futures_chunks(11, 100))),
            413,
            "payload_too_large",
        ),
        (
            client.get(ingest.url("/webhooks/github")),
            405,
            "method_not_allowed",
        ),
        (
            client.post(ingest.url("/webhooks/GitHub")),
            404,
            "not_found",
        ),
        (client.post(ingest.url("/webhooks/")), 404, "not_found"),
        (client.post(ingest.url("/nowhere")), 404, "not_found"),
        (
            client
                .post(ingest.url("/webhooks/github"))
                .header("x-big", "v".repeat(17 * 1024)),
            431,
            "headers_too_large",
        ),
    ];
    for (request, status, code) in cases {
        let response = request.send().await.expect("request");
        assert_eq!(response.status(), status);
        let body: serde_json::Value = response.json().await.expect("errors are JSON");
        assert_eq!(body["error"], code);
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // A body that stalls past BODY_READ_TIMEOUT_SECONDS gets 408.
    let (chunks, stalled_body) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    chunks
        .send(Ok(b"{\"partial\":".to_vec()))
        .await
        .expect("first chunk");
    let stalled = client
        .post(ingest.url("/webhooks/github"))
        .body(reqwest::Body::wrap_stream(
            tokio_stream::wrappers::ReceiverStream::new(stalled_body),
        ))
        .send()
        .await
        .expect("POST with a stalled body");
    assert_eq!(stalled.status(), 408);
    drop(chunks);

    assert_eq!(
        stack.receive_all(&stack.queue_url).await.len(),
        1,
        "only the accepted webhook was enqueued"
    );
    drop(ingest);
    stack.cleanup().await;
}

/// A streaming body of `chunks` chunks of `size` bytes, sent without Content-Length.
fn futures_chunks(
    chunks: usize,
    size: usize,
) -> impl tokio_stream::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    let items: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..chunks).map(|_| Ok(vec![b'z'; size])).collect();
    tokio_stream::iter(items)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_webhooks_share_batch_calls() {
    const CLIENTS: usize = 64;
    const PER_CLIENT: usize = 10;
    let stack = TestStack::new("ingest-batching").await;
    let ingest = stack.spawn_ingest(&[("BATCH_MAX_IN_FLIGHT", "4")]).await;
    let url = ingest.url("/webhooks/load");
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let url = url.clone();
        clients.spawn(async move {
            let client = reqwest::Client::new();
            for n in 0..PER_CLIENT {
                let response = client
                    .post(&url)
                    .body(format!("webhook {n}"))
                    .send()
                    .await
                    .expect("POST");
                assert_eq!(response.status(), 202);
            }
        });
    }
    clients.join_all().await;
    let metrics = ingest.metrics().await;
    let accepted = counter(
        &metrics,
        "webhook_ingest_requests_total",
        &[r#"status="202""#],
    );
    let calls = counter(
        &metrics,
        "webhook_sqs_requests_total",
        &[r#"operation="SendMessageBatch""#],
    );
    assert_eq!(accepted, (CLIENTS * PER_CLIENT) as f64);
    let per_webhook = calls / accepted;
    assert!(
        per_webhook < 0.5,
        "{calls} SendMessageBatch calls for {accepted} webhooks ({per_webhook:.3} per webhook)"
    );
    assert_eq!(
        stack.receive_all(&stack.queue_url).await.len(),
        CLIENTS * PER_CLIENT
    );
    drop(ingest);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_cleartext_is_served() {
    let stack = TestStack::new("ingest-h2c").await;
    let ingest = stack.spawn_ingest(&[]).await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let response = client
        .post(ingest.url("/webhooks/h2"))
        .body("over h2c")
        .send()
        .await
        .expect("POST over h2c");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 202);
    drop(ingest);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_no_accepted_webhook() {
    let stack = TestStack::new("ingest-sigterm").await;
    let ingest = stack
        .spawn_ingest(&[
            ("DEREGISTRATION_DELAY_SECONDS", "1"),
            ("SHUTDOWN_GRACE_SECONDS", "10"),
        ])
        .await;
    let url = ingest.url("/webhooks/drain");
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = tokio::task::JoinSet::new();
    for client_n in 0..16 {
        let (url, stop) = (url.clone(), Arc::clone(&stop));
        clients.spawn(async move {
            let client = reqwest::Client::new();
            let (mut accepted, mut refused) = (Vec::new(), 0usize);
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                match client
                    .post(&url)
                    .body(format!("client {client_n} webhook {n}"))
                    .send()
                    .await
                {
                    Ok(response) if response.status() == 202 => {
                        let reply: serde_json::Value =
                            response.json().await.expect("202 has a JSON body");
                        accepted.push(reply["id"].as_str().expect("id").to_owned());
                    }
                    Ok(response) => {
                        assert!(!response.status().is_success(), "only 202 is a success");
                        refused += 1;
                    }
                    Err(_) => {
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            (accepted, refused)
        });
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ingest.signal(nix::sys::signal::Signal::SIGTERM);
    // During the deregistration delay: not ready, yet still taking webhooks.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let probe = reqwest::Client::new();
    assert_eq!(
        probe
            .get(ingest.url("/readyz"))
            .send()
            .await
            .expect("GET /readyz")
            .status(),
        503
    );
    assert_eq!(
        probe
            .post(&url)
            .body("during the delay")
            .send()
            .await
            .expect("POST")
            .status(),
        202
    );
    let status = ingest.wait(Duration::from_secs(20)).await;
    stop.store(true, Ordering::Relaxed);
    assert!(status.success(), "ingest exits 0 after draining: {status}");
    let results = clients.join_all().await;
    let accepted: Vec<String> = results.iter().flat_map(|(ids, _)| ids.clone()).collect();
    let refused: usize = results.iter().map(|(_, refused)| refused).sum();
    assert!(
        accepted.len() > 50,
        "the load ran: {} accepted",
        accepted.len()
    );
    assert!(
        refused > 0,
        "requests after the listener closed were refused"
    );
    let queued: HashSet<String> = stack
        .event_ids_in(&stack.queue_url)
        .await
        .into_iter()
        .collect();
    let lost: Vec<&String> = accepted.iter().filter(|id| !queued.contains(*id)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} accepted webhooks are not on the queue: {lost:?}",
        lost.len(),
        accepted.len()
    );
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_sqs_gives_503_with_retry_after_and_ingest_stays_ready() {
    let stack = TestStack::new("ingest-no-sqs").await;
    let closed_port = e2e_tests::free_port();
    let ingest = stack
        .spawn_ingest(&[
            (
                "AWS_ENDPOINT_URL",
                &format!("http://127.0.0.1:{closed_port}"),
            ),
            ("SEND_TIMEOUT_SECONDS", "1"),
        ])
        .await;
    let response = reqwest::Client::new()
        .post(ingest.url("/webhooks/github"))
        .body("{}")
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    // Readiness follows the process, not SQS: a load balancer must not replace every task
    // over an SQS outage. The outage shows in a metric instead.
    for url in [ingest.url("/readyz"), ingest.ops_url("/readyz")] {
        let ready = reqwest::get(&url).await.expect("GET /readyz");
        assert_eq!(
            ready.status(),
            200,
            "{url} stays ready while SQS is unreachable"
        );
    }
    let metrics = ingest.metrics().await;
    assert_eq!(
        gauge(&metrics, "webhook_ingest_queue_reachable", &[]),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(stack.messages_in(&stack.queue_url).await, 0);
    drop(ingest);
    stack.cleanup().await;
}

/// A frozen SQS endpoint: accepts connections and never answers.
async fn frozen_endpoint() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (url, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_sqs_gets_503_well_inside_shopifys_five_seconds_with_default_settings() {
    let stack = TestStack::new("ingest-frozen-sqs").await;
    let (frozen, task) = frozen_endpoint().await;
    let ingest = stack.spawn_ingest(&[("AWS_ENDPOINT_URL", &frozen)]).await;
    let started = std::time::Instant::now();
    let response = reqwest::Client::new()
        .post(ingest.url("/webhooks/shopify"))
        .body("{}")
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("an answer before Shopify's 5 s timeout");
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert!(
        elapsed < Duration::from_millis(4_500),
        "503 after {elapsed:?}: a provider waiting 5 s must see it"
    );
    let ready = reqwest::get(ingest.url("/readyz"))
        .await
        .expect("GET /readyz");
    assert_eq!(ready.status(), 200);
    task.abort();
    drop(ingest);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_reachable_gauge_is_1_while_sqs_answers() {
    let stack = TestStack::new("ingest-sqs-reachable").await;
    let ingest = stack.spawn_ingest(&[]).await;
    e2e_tests::eventually(Duration::from_secs(10), "queue reachable", || async {
        let metrics = ingest.metrics().await;
        Ok((gauge(&metrics, "webhook_ingest_queue_reachable", &[]) == Some(1.0)).then_some(()))
    })
    .await
    .expect("the probe succeeds against LocalStack");
    drop(ingest);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_queue_round_trip() {
    let options = QueueOptions {
        fifo: true,
        ..QueueOptions::default()
    };
    let stack = TestStack::with_queues("ingest-fifo", options).await;
    assert!(stack.queue_url.ends_with(".fifo"));
    let ingest = stack.spawn_ingest(&[]).await;
    let worker = stack.spawn_worker(&[]).await;
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for n in 0..5 {
        let response = client
            .post(ingest.url("/webhooks/ordered"))
            .body(format!("event {n}"))
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), 202);
        let reply: serde_json::Value = response.json().await.expect("JSON");
        ids.push(reply["id"].as_str().expect("id").to_owned());
    }
    stack.wait_for_rows(5, Duration::from_secs(30)).await;
    let stored: Vec<String> = sqlx::query_scalar("SELECT id FROM webhook_events ORDER BY id")
        .fetch_all(&stack.db)
        .await
        .expect("rows");
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(stored, expected);
    stack
        .wait_for_empty(&stack.queue_url, Duration::from_secs(30))
        .await;
    drop((ingest, worker));
    stack.cleanup().await;
}
