//! One webhook's whole journey, many times over: ingest -> SQS -> worker -> PostgreSQL,
//! with the real binaries, LocalStack and PostgreSQL.

use std::collections::HashMap;
use std::time::Duration;

use e2e_tests::TestStack;
use sqlx::Row as _;

/// A webhook as sent, to compare with what was stored.
#[derive(Debug, Clone)]
struct Sent {
    source: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
}

/// Webhook number `n`: JSON, plain text (with quotes, newlines, non-ASCII) or bytes that
/// are not UTF-8, spread over several sources.
fn webhook(n: usize) -> Sent {
    let source = ["github", "stripe", "shop_1", "acme-billing"][n % 4];
    match n % 3 {
        0 => Sent {
            source,
            content_type: "application/json",
            body: serde_json::json!({ "n": n, "text": "caf\u{e9} \"quoted\"", "nested": { "ok": true } }).to_string().into_bytes(),
        },
        1 => Sent { source, content_type: "text/plain; charset=utf-8", body: format!("line {n}\n\ttab \"q\" \\ \u{1F980}\n").into_bytes() },
        _ => Sent {
            source,
            content_type: "application/octet-stream",
            body: (0..64 + n).map(|i| ((i * 37 + n * 11) % 256) as u8).chain([0xff, 0xfe, 0x00]).collect(),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_webhook_is_stored_once_with_its_exact_bytes() {
    const WEBHOOKS: usize = 200;
    const CLIENTS: usize = 16;
    let stack = TestStack::new("pipeline").await;
    let ingest = stack.spawn_ingest(&[]).await;
    let worker = stack
        .spawn_worker(&[
            ("WORKER_CONCURRENCY", "4"),
            ("DATABASE_MAX_CONNECTIONS", "4"),
        ])
        .await;

    let mut clients = tokio::task::JoinSet::new();
    for client_n in 0..CLIENTS {
        let url_for = |source: &str| ingest.url(&format!("/webhooks/{source}"));
        let requests: Vec<(String, Sent)> = (client_n..WEBHOOKS)
            .step_by(CLIENTS)
            .map(|n| {
                let sent = webhook(n);
                (url_for(sent.source), sent)
            })
            .collect();
        clients.spawn(async move {
            let client = reqwest::Client::new();
            let mut accepted = Vec::new();
            for (url, sent) in requests {
                let response = client
                    .post(url)
                    .header("content-type", sent.content_type)
                    .body(sent.body.clone())
                    .send()
                    .await
                    .expect("POST webhook");
                assert_eq!(response.status(), 202, "{:?}", response.text().await);
                let reply: serde_json::Value = response.json().await.expect("JSON reply");
                let id = reply["id"].as_str().expect("reply has an id").to_owned();
                accepted.push((id, sent));
            }
            accepted
        });
    }
    let accepted: HashMap<String, Sent> = clients.join_all().await.into_iter().flatten().collect();
    assert_eq!(accepted.len(), WEBHOOKS, "every 202 carries a distinct id");

    stack
        .wait_for_rows(WEBHOOKS as i64, Duration::from_secs(60))
        .await;
    let rows = sqlx::query("SELECT id, source, content_type, body, payload IS NOT NULL AS has_payload FROM webhook_events")
        .fetch_all(&stack.db)
        .await
        .expect("reading rows");
    assert_eq!(rows.len(), WEBHOOKS, "no extra rows");
    for row in rows {
        let id: String = row.get("id");
        let sent = accepted
            .get(&id)
            .unwrap_or_else(|| panic!("stored id {id} was never accepted"));
        assert_eq!(
            row.get::<String, _>("source"),
            sent.source,
            "source of {id}"
        );
        assert_eq!(
            row.get::<Vec<u8>, _>("body"),
            sent.body,
            "body bytes of {id}"
        );
        assert_eq!(
            row.get::<Option<String>, _>("content_type").as_deref(),
            Some(sent.content_type)
        );
        assert_eq!(
            row.get::<bool, _>("has_payload"),
            sent.content_type == "application/json",
            "payload of {id}"
        );
    }
    // Stored messages are deleted; nothing went to the DLQ.
    stack
        .wait_for_empty(&stack.queue_url, Duration::from_secs(30))
        .await;
    assert_eq!(stack.messages_in(&stack.dlq_url).await, 0);

    let metrics = worker.metrics().await;
    assert!(
        metrics.contains(r#"webhook_worker_messages_total{outcome="stored"} 200"#),
        "{metrics}"
    );
    assert!(metrics.contains("webhook_queue_messages{"), "{metrics}");
    drop((ingest, worker));
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_the_queue_cannot_take_gets_503_and_is_not_stored() {
    let stack = TestStack::new("no-queue").await;
    let missing_queue = format!("missing-{}", uuid::Uuid::new_v4().simple());
    let ingest = stack
        .spawn_ingest_for(&stack.sibling_queue_url(&missing_queue), &[])
        .await;
    let worker = stack.spawn_worker(&[]).await;

    let response = reqwest::Client::new()
        .post(ingest.url("/webhooks/github"))
        .header("content-type", "application/json")
        .body(r#"{"action":"opened"}"#)
        .send()
        .await
        .expect("POST webhook");
    assert_eq!(response.status(), 503);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().ok()),
        Some(Some("5"))
    );
    let error: serde_json::Value = response.json().await.expect("JSON error body");
    assert_eq!(error["error"], "queue_unavailable");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));

    // Readiness follows the process; the metric reports the missing queue.
    let ready = reqwest::get(ingest.url("/readyz"))
        .await
        .expect("GET /readyz");
    assert_eq!(ready.status(), 200);
    let metrics = ingest.metrics().await;
    assert_eq!(
        e2e_tests::probes::gauge(&metrics, "webhook_ingest_queue_reachable", &[]),
        Some(0.0),
        "{metrics}"
    );

    // The message was not sent late either: once the queue exists it is empty, and the
    // worker (consuming the stack's own queue meanwhile) stored nothing.
    let created = stack
        .sqs
        .create_queue()
        .queue_name(&missing_queue)
        .send()
        .await
        .expect("CreateQueue");
    let created_url = created.queue_url().expect("queue URL").to_owned();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(stack.messages_in(&created_url).await, 0);
    assert_eq!(stack.stored_count().await, 0);
    let _ = stack
        .sqs
        .delete_queue()
        .queue_url(&created_url)
        .send()
        .await;
    drop((ingest, worker));
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_subcommands_probe_the_running_process() {
    let stack = TestStack::new("healthcheck").await;
    let ingest = stack.spawn_ingest(&[]).await;
    let worker = stack.spawn_worker(&[]).await;
    for (binary, service) in [("ingest", &ingest), ("worker", &worker)] {
        let addr = service.ops_url("").trim_start_matches("http://").to_owned();
        let (status, output) = stack
            .run_command(binary, &["healthcheck"], &[("METRICS_ADDR", &addr)])
            .await;
        assert!(
            status.success(),
            "{binary} healthcheck against a live process:\n{output}"
        );
        let nobody = format!("127.0.0.1:{}", e2e_tests::free_port());
        let (status, _) = stack
            .run_command(binary, &["healthcheck"], &[("METRICS_ADDR", &nobody)])
            .await;
        assert!(
            !status.success(),
            "{binary} healthcheck fails when nothing answers"
        );
    }
    drop((ingest, worker));
    stack.cleanup().await;
}
