//! Traces through the queue (issue 21), end to end: both binaries export to a real OTLP
//! receiver (Elastic's mock OTLP server, from npm), and each webhook gets one trace from the
//! provider's span through ingest's server and `create` spans to the worker's `process`
//! span, with the batch spans (`send`, `receive`, batch `process`) linked to its `create`
//! span; the message carries the context as a `traceparent` attribute and as
//! `AWSTraceHeader`, on the pointer path too; with tracing off, messages carry neither.

use std::time::Duration;

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use e2e_tests::otlp::{OtlpReceiver, ReceivedSpan};
use e2e_tests::{Service, TestStack, eventually};

/// Time for spans to reach the receiver (batches go every 100 ms here).
const SPANS_TIMEOUT: Duration = Duration::from_secs(30);
/// Time for a webhook to be stored.
const STORE_TIMEOUT: Duration = Duration::from_secs(30);
/// A provider's trace: its trace id and its span's id.
const PROVIDER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PROVIDER_SPAN: &str = "00f067aa0ba902b7";

/// The settings that turn tracing on, to `receiver`.
fn tracing_to(receiver: &OtlpReceiver) -> [(&str, &str); 2] {
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ]
}

/// Posts a JSON webhook to `source`, with a `traceparent` when given; returns its event id.
async fn post(ingest: &Service, source: &str, traceparent: Option<&str>, body: String) -> String {
    let mut request = reqwest::Client::new()
        .post(ingest.url(&format!("/webhooks/{source}")))
        .header("content-type", "application/json")
        .body(body);
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let response = request.send().await.expect("POST");
    assert_eq!(response.status(), 202, "{}", ingest.log());
    let answer: serde_json::Value = response.json().await.expect("JSON answer");
    answer["id"].as_str().expect("an id").to_owned()
}

/// Receives one message from the main queue, with its attributes, and deletes it.
async fn take_raw_message(stack: &TestStack) -> Message {
    let output = stack
        .sqs
        .receive_message()
        .queue_url(&stack.queue_url)
        .wait_time_seconds(5)
        .message_attribute_names("All")
        .message_system_attribute_names(MessageSystemAttributeName::AwsTraceHeader)
        .send()
        .await
        .expect("ReceiveMessage");
    let message = output.messages().first().expect("a message").clone();
    stack
        .sqs
        .delete_message()
        .queue_url(&stack.queue_url)
        .receipt_handle(message.receipt_handle().expect("a receipt handle"))
        .send()
        .await
        .expect("DeleteMessage");
    message
}

/// The message's `traceparent` attribute and `AWSTraceHeader`.
fn carried_context(message: &Message) -> (Option<String>, Option<String>) {
    let traceparent = message
        .message_attributes()
        .and_then(|attributes| attributes.get("traceparent"))
        .and_then(|value| value.string_value())
        .map(str::to_owned);
    let xray = message
        .attributes()
        .and_then(|attributes| attributes.get(&MessageSystemAttributeName::AwsTraceHeader))
        .cloned();
    (traceparent, xray)
}

/// The `create` span of the webhook with event id `id`, once received.
async fn create_span(receiver: &OtlpReceiver, id: &str) -> ReceivedSpan {
    eventually(SPANS_TIMEOUT, "the create span", || async {
        Ok(receiver.spans().into_iter().find(|span| {
            span.kind == "SPAN_KIND_PRODUCER"
                && span.attribute("webhook.event_id").as_deref() == Some(id)
        }))
    })
    .await
    .unwrap_or_else(|error| panic!("{error}; spans: {:#?}", receiver.spans()))
}

/// What the message says of its `create` span: `traceparent` and X-Ray forms of its context.
fn assert_carries(message: &Message, create: &ReceivedSpan) {
    let (traceparent, xray) = carried_context(message);
    assert_eq!(
        traceparent.as_deref(),
        Some(format!("00-{}-{}-01", create.trace_id, create.span_id).as_str())
    );
    let (head, tail) = create.trace_id.split_at(8);
    assert_eq!(
        xray.as_deref(),
        Some(format!("Root=1-{head}-{tail};Parent={};Sampled=1", create.span_id).as_str())
    );
}

/// The spans of one webhook, checked: its trace spans both binaries and the batch spans link
/// to its `create` span. `provider` is the provider's span it continues, if any.
fn assert_one_trace(spans: &[ReceivedSpan], create: &ReceivedSpan, provider: Option<(&str, &str)>) {
    let find = |what: &str, f: &dyn Fn(&ReceivedSpan) -> bool| -> ReceivedSpan {
        spans
            .iter()
            .find(|span| f(span))
            .cloned()
            .unwrap_or_else(|| panic!("no {what} for {create:?}; spans: {spans:#?}"))
    };
    let server = find("server span", &|s| s.span_id == create.parent_span_id);
    assert_eq!(
        (
            server.kind.as_str(),
            server.name.as_str(),
            server.service.as_deref()
        ),
        (
            "SPAN_KIND_SERVER",
            "POST /webhooks/{source}",
            Some("ingest")
        )
    );
    assert_eq!(
        server.attribute("http.response.status_code").as_deref(),
        Some("202")
    );
    assert_eq!(server.trace_id, create.trace_id);
    match provider {
        Some((trace, span)) => {
            assert_eq!(
                (create.trace_id.as_str(), server.parent_span_id.as_str()),
                (trace, span)
            );
        }
        None => assert_eq!(
            server.parent_span_id, "",
            "a request without traceparent starts a trace"
        ),
    }
    assert_eq!(
        create.name,
        format!(
            "create {}",
            create
                .attribute("messaging.destination.name")
                .unwrap_or_default()
        ),
        "{create:#?}"
    );
    assert_eq!(
        create.attribute("messaging.system").as_deref(),
        Some("aws_sqs")
    );
    let send = find("send span", &|s| {
        s.kind == "SPAN_KIND_CLIENT" && s.links_to(create) && s.service.as_deref() == Some("ingest")
    });
    assert!(send.name.starts_with("send "), "{send:?}");
    assert!(
        send.attribute("messaging.batch.message_count").is_some(),
        "{send:?}"
    );
    let process = find("per-message process span", &|s| {
        s.kind == "SPAN_KIND_CONSUMER" && s.parent_span_id == create.span_id
    });
    assert_eq!(
        (process.trace_id.as_str(), process.service.as_deref()),
        (create.trace_id.as_str(), Some("worker")),
        "the worker's process span is in the webhook's trace"
    );
    assert!(
        process
            .attribute("messaging.message.id")
            .is_some_and(|id| !id.is_empty())
    );
    assert!(
        !process.links.is_empty(),
        "linked to its batch's span: {process:?}"
    );
    let receive = find("receive span", &|s| {
        s.kind == "SPAN_KIND_CLIENT" && s.links_to(create) && s.service.as_deref() == Some("worker")
    });
    assert!(receive.name.starts_with("receive "), "{receive:?}");
    let batch = find("batch process span", &|s| {
        s.kind == "SPAN_KIND_CONSUMER" && s.links_to(create) && s.parent_span_id.is_empty()
    });
    assert!(
        process.links.iter().any(|l| l.span_id == batch.span_id),
        "{process:?} links to {batch:?}"
    );
    let database = find("database span", &|s| s.parent_span_id == batch.span_id);
    assert_eq!(
        database.attribute("db.system.name").as_deref(),
        Some("postgresql")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_webhook_is_one_trace_across_both_binaries_with_the_batch_spans_linked() {
    let stack = TestStack::new("tracing").await;
    let receiver = OtlpReceiver::start().await;
    let ingest = stack.spawn_ingest(&tracing_to(&receiver)).await;

    // Ingest alone: the message carries its create span's context, both ways.
    let first = post(&ingest, "demo", None, r#"{"n":0}"#.to_owned()).await;
    let message = take_raw_message(&stack).await;
    assert_carries(&message, &create_span(&receiver, &first).await);

    let worker = stack.spawn_worker(&tracing_to(&receiver)).await;
    let provider = format!("00-{PROVIDER_TRACE}-{PROVIDER_SPAN}-01");
    let continued = post(&ingest, "demo", Some(&provider), r#"{"n":1}"#.to_owned()).await;
    let started = post(&ingest, "demo", None, r#"{"n":2}"#.to_owned()).await;
    for id in [&continued, &started] {
        eventually(STORE_TIMEOUT, "the row", || async {
            Ok(stack.stored_body("demo", id).await)
        })
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", worker.log()));
    }
    for (id, provider) in [
        (&continued, Some((PROVIDER_TRACE, PROVIDER_SPAN))),
        (&started, None),
    ] {
        let create = create_span(&receiver, id).await;
        // The worker's spans come after the commit: wait for the per-message one.
        eventually(SPANS_TIMEOUT, "the worker's spans", || async {
            let spans = receiver.spans();
            let done = spans.iter().any(|s| s.parent_span_id == create.span_id)
                && spans.iter().any(|s| {
                    s.service.as_deref() == Some("worker")
                        && s.kind == "SPAN_KIND_CLIENT"
                        && s.links_to(&create)
                });
            Ok(done.then_some(()))
        })
        .await
        .unwrap_or_else(|error| {
            panic!("{error}; spans: {:#?}\n{}", receiver.spans(), worker.log())
        });
        assert_one_trace(&receiver.spans(), &create, provider);
    }
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pointer_message_carries_the_context_too() {
    let stack = TestStack::new("tracing-pointer").await;
    let bucket = stack.create_bucket().await;
    let receiver = OtlpReceiver::start().await;
    let mut settings = tracing_to(&receiver).to_vec();
    settings.extend([
        ("LARGE_PAYLOAD_BUCKET", bucket.as_str()),
        ("LARGE_PAYLOAD_THRESHOLD_BYTES", "1024"),
    ]);
    let ingest = stack.spawn_ingest(&settings).await;
    let id = post(
        &ingest,
        "demo",
        None,
        format!(r#"{{"pad":"{}"}}"#, "x".repeat(4096)),
    )
    .await;
    let message = take_raw_message(&stack).await;
    let attributes = message.message_attributes().cloned().unwrap_or_default();
    assert!(
        attributes.contains_key("ExtendedPayloadSize"),
        "a pointer: {message:?}"
    );
    assert_carries(&message, &create_span(&receiver, &id).await);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tracing_off_messages_carry_no_context() {
    let stack = TestStack::new("tracing-off").await;
    let ingest = stack.spawn_ingest(&[]).await;
    post(
        &ingest,
        "demo",
        Some(&format!("00-{PROVIDER_TRACE}-{PROVIDER_SPAN}-01")),
        "{}".to_owned(),
    )
    .await;
    let message = take_raw_message(&stack).await;
    assert_eq!(carried_context(&message), (None, None));
    let attributes: Vec<String> = message
        .message_attributes()
        .map(|a| a.keys().cloned().collect())
        .unwrap_or_default();
    assert!(
        !attributes.iter().any(|name| name == "traceparent"),
        "{attributes:?}"
    );
    stack.cleanup().await;
}
