//! Load for ingest's benchmark: keep-alive clients posting webhooks, and the ceiling they are
//! compared with, a plain SDK client sending `SendMessageBatch` calls of the very envelopes
//! ingest would make of those webhooks; plus the CPU each process spent meanwhile.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use webhook_shared::envelope::Envelope;
use webhook_shared::sqs::{ATTRIBUTE_EVENT_ID, ATTRIBUTE_SOURCE, MAX_BATCH_ENTRIES};

use crate::report::{LOCALSTACK_CMDLINE, Latencies, cpu_seconds, cpu_seconds_of};

/// The source the benchmark posts to.
pub const SOURCE: &str = "bench";
/// The `Content-Type` the load generator sends.
const CONTENT_TYPE: &str = "application/json";
/// The `User-Agent` the load generator sends, as a provider would.
const USER_AGENT: &str = "bench-ingest/1.0";

/// A small JSON webhook of exactly `bytes` bytes (or the smallest such document, when
/// `bytes` is smaller than it).
pub fn webhook_body(bytes: usize) -> String {
    let head = r#"{"type":"order.created","data":{"id":"ord_1234567890","amount":4200,"currency":"EUR","note":""#;
    let tail = r#""}}"#;
    let pad = bytes.saturating_sub(head.len() + tail.len());
    format!("{head}{}{tail}", "x".repeat(pad))
}

/// What the keep-alive clients measured.
#[derive(Debug)]
pub struct LoadRun {
    /// Webhooks answered 202 per second.
    pub accepted_per_second: f64,
    /// Latency of each webhook answered 202.
    pub latencies: Latencies,
}

/// Posts `body` to `url` from `clients` keep-alive clients, each sending its next webhook as
/// soon as the last is answered, for `duration`.
pub async fn post_webhooks(url: &str, clients: usize, body: &str, duration: Duration) -> LoadRun {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (url, body, stop) = (url.to_owned(), body.to_owned(), Arc::clone(&stop));
        tasks.spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .expect("client");
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let response = client
                    .post(&url)
                    .header("content-type", CONTENT_TYPE)
                    .header("user-agent", USER_AGENT)
                    .body(body.clone())
                    .send()
                    .await;
                if response.is_ok_and(|r| r.status() == 202) {
                    latencies.push(started.elapsed());
                }
            }
            latencies
        });
    }
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let latencies = Latencies::new(tasks.join_all().await.into_iter().flatten().collect());
    LoadRun {
        accepted_per_second: latencies.count() as f64 / started.elapsed().as_secs_f64(),
        latencies,
    }
}

/// The envelope ingest makes of one of [`post_webhooks`]' requests to `host` (`ip:port`):
/// the headers reqwest and the load generator send, a fresh UUIDv7 as event id.
pub fn client_envelope(body: &str, host: &str) -> Envelope {
    let headers = BTreeMap::from([
        ("accept".to_owned(), "*/*".to_owned()),
        ("content-length".to_owned(), body.len().to_string()),
        ("content-type".to_owned(), CONTENT_TYPE.to_owned()),
        ("host".to_owned(), host.to_owned()),
        ("user-agent".to_owned(), USER_AGENT.to_owned()),
    ]);
    Envelope {
        id: uuid::Uuid::now_v7().to_string(),
        source: SOURCE.to_owned(),
        received_at: chrono::Utc::now(),
        headers,
        content_type: Some(CONTENT_TYPE.to_owned()),
        body: bytes::Bytes::copy_from_slice(body.as_bytes()),
    }
}

/// What the plain SDK client measured.
#[derive(Debug)]
pub struct CeilingRun {
    /// Messages SQS accepted per second.
    pub messages_per_second: f64,
    /// Latency of each `SendMessageBatch` call.
    pub calls: Latencies,
}

/// `callers` concurrent loops, each sending `SendMessageBatch` calls of 10 fresh envelopes of
/// `body` (as [`client_envelope`] makes them, with ingest's two message attributes) for
/// `duration`.
pub async fn sdk_ceiling(
    sqs: &Client,
    queue_url: &str,
    callers: usize,
    body: &str,
    host: &str,
    duration: Duration,
) -> anyhow::Result<CeilingRun> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..callers {
        let (sqs, url, body, host, stop) = (
            sqs.clone(),
            queue_url.to_owned(),
            body.to_owned(),
            host.to_owned(),
            Arc::clone(&stop),
        );
        tasks.spawn(async move {
            let (mut sent, mut calls) = (0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let entries = (0..MAX_BATCH_ENTRIES)
                    .map(|i| entry(i, &client_envelope(&body, &host)))
                    .collect::<Result<Vec<_>, _>>()?;
                let started = Instant::now();
                let output = sqs
                    .send_message_batch()
                    .queue_url(&url)
                    .set_entries(Some(entries))
                    .send()
                    .await?;
                calls.push(started.elapsed());
                sent += output.successful().len() as u64;
            }
            anyhow::Ok((sent, calls))
        });
    }
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let (mut total, mut calls) = (0, Vec::new());
    for result in tasks.join_all().await {
        let (sent, latencies) = result?;
        total += sent;
        calls.extend(latencies);
    }
    Ok(CeilingRun {
        messages_per_second: total as f64 / started.elapsed().as_secs_f64(),
        calls: Latencies::new(calls),
    })
}

/// One batch entry as ingest's sender builds it for a standard queue.
fn entry(
    index: usize,
    envelope: &Envelope,
) -> Result<SendMessageBatchRequestEntry, aws_sdk_sqs::error::BuildError> {
    let attribute = |value: &str| {
        MessageAttributeValue::builder()
            .data_type("String")
            .string_value(value)
            .build()
    };
    SendMessageBatchRequestEntry::builder()
        .id(index.to_string())
        .message_body(envelope.to_json())
        .message_attributes(ATTRIBUTE_SOURCE, attribute(&envelope.source)?)
        .message_attributes(ATTRIBUTE_EVENT_ID, attribute(&envelope.id)?)
        .build()
}

/// CPU seconds used so far by ingest, by this process (the load generator or the SDK client)
/// and by LocalStack.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSplit {
    /// ingest's CPU seconds (0 when no ingest runs).
    pub ingest: f64,
    /// This process's CPU seconds.
    pub load: f64,
    /// LocalStack's CPU seconds.
    pub localstack: f64,
}

impl CpuSplit {
    /// The CPU seconds so far, with ingest's process `ingest_pid` if any.
    pub fn now(ingest_pid: Option<u32>) -> Self {
        Self {
            ingest: ingest_pid.and_then(cpu_seconds).unwrap_or_default(),
            load: cpu_seconds(std::process::id()).unwrap_or_default(),
            localstack: cpu_seconds_of(LOCALSTACK_CMDLINE),
        }
    }

    /// The CPU seconds spent since `earlier`.
    pub fn since(self, earlier: Self) -> Self {
        Self {
            ingest: self.ingest - earlier.ingest,
            load: self.load - earlier.load,
            localstack: self.localstack - earlier.localstack,
        }
    }
}

/// LocalStack's CPU use, in cores, over `duration` while the benchmark sends it nothing. More
/// than a few percent means another client is using it: it then serves the benchmark's runs at
/// a rate that depends on their share of it, and every figure is low and noisy.
pub async fn localstack_idle_cores(duration: Duration) -> f64 {
    let before = cpu_seconds_of(LOCALSTACK_CMDLINE);
    tokio::time::sleep(duration).await;
    (cpu_seconds_of(LOCALSTACK_CMDLINE) - before) / duration.as_secs_f64()
}

/// The body size of one message on `queue_url`, if one can be read.
pub async fn one_message_bytes(sqs: &Client, queue_url: &str) -> Option<usize> {
    let output = sqs
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(1)
        .send()
        .await
        .ok()?;
    Some(output.messages().first()?.body()?.len())
}
