//! Benchmark of ingest against LocalStack, with the ceiling of a plain SDK client measured in
//! the same run on the same endpoint, so the figures are ratios that survive a noisy machine.
//!
//! Run it with `scripts/bench.sh ingest` (which starts the local stack and builds in release
//! mode). It prints, for N keep-alive clients: accepted webhooks/s, p50/p99 latency, SQS
//! requests per accepted webhook, ingest's peak RSS; the same with one call per webhook
//! (`BATCH_MAX_MESSAGES=1`); and the plain SDK client's rate sending batches of 10.

#![allow(
    clippy::print_stdout,
    reason = "the printed report is what a benchmark is for"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use clap::Parser;
use e2e_tests::TestStack;
use e2e_tests::report::{Latencies, counter, mib};

/// Load settings.
#[derive(Debug, Parser)]
struct Args {
    /// Concurrent keep-alive clients (and concurrent SDK callers for the ceiling).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Seconds each measurement runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Body size of each webhook, in bytes.
    #[arg(long, default_value_t = 1024)]
    body_bytes: usize,
    /// Connections held open for the memory measurement.
    #[arg(long, default_value_t = 256)]
    memory_connections: usize,
    /// An ingest setting for the batched runs, as NAME=VALUE (repeatable), e.g.
    /// `--set BATCH_MAX_IN_FLIGHT=4`.
    #[arg(long = "set", value_parser = e2e_tests::report::parse_setting)]
    settings: Vec<(String, String)>,
}

/// What one ingest run measured.
struct IngestRun {
    accepted_per_second: f64,
    latencies: Latencies,
    sqs_requests_per_webhook: f64,
    peak_rss: Option<u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let stack = TestStack::new("bench-ingest").await;
    let body = "x".repeat(args.body_bytes);
    let duration = Duration::from_secs(args.seconds);

    let ceiling = sdk_ceiling(&stack, args.clients, &body, duration).await?;
    stack.purge().await;
    let settings: Vec<(&str, &str)> = args
        .settings
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let batched = ingest_run(&stack, &settings, args.clients, &body, duration).await;
    stack.purge().await;
    let single = ingest_run(
        &stack,
        &[("BATCH_MAX_MESSAGES", "1"), ("BATCH_MAX_IN_FLIGHT", "1024")],
        args.clients,
        &body,
        duration,
    )
    .await;
    stack.purge().await;
    let memory = ingest_run(&stack, &settings, args.memory_connections, &body, duration).await;
    stack.purge().await;

    let mut out = String::new();
    out += &format!(
        "ingest benchmark: {} clients, {} s each, {} B bodies, settings {:?}, LocalStack at {}\n\n",
        args.clients, args.seconds, args.body_bytes, args.settings, stack.queue_url
    );
    out += "| run | accepted/s | p50 ms | p99 ms | SQS requests/webhook | peak RSS MiB |\n|---|---|---|---|---|---|\n";
    for (name, run) in [
        ("ingest, batched (default)", &batched),
        ("ingest, BATCH_MAX_MESSAGES=1", &single),
        (
            &format!("ingest, {} connections", args.memory_connections) as &str,
            &memory,
        ),
    ] {
        out += &format!(
            "| {name} | {:.0} | {:.2} | {:.2} | {:.3} | {} |\n",
            run.accepted_per_second,
            run.latencies.percentile_ms(50.0),
            run.latencies.percentile_ms(99.0),
            run.sqs_requests_per_webhook,
            run.peak_rss
                .map_or_else(|| "?".to_owned(), |b| format!("{:.1}", mib(b)))
        );
    }
    out +=
        &format!("| plain SDK client, SendMessageBatch of 10 | {ceiling:.0} | | | 0.100 | |\n\n");
    out += &format!(
        "ingest / SDK ceiling: {:.2} (target >= 0.9)\n",
        batched.accepted_per_second / ceiling
    );
    out += &format!(
        "batched / one call per webhook: {:.2}x throughput\n",
        batched.accepted_per_second / single.accepted_per_second
    );
    out += &format!(
        "SQS requests per webhook at {} clients: {:.3} (target <= 0.15)\n",
        args.clients, batched.sqs_requests_per_webhook
    );
    out += &format!(
        "peak RSS at {} connections: {} MiB (target <= 30)\n",
        args.memory_connections,
        memory
            .peak_rss
            .map_or_else(|| "?".to_owned(), |b| format!("{:.1}", mib(b)))
    );
    print!("{out}");
    stack.cleanup().await;
    Ok(())
}

/// Messages/s a plain SDK client reaches with `clients` concurrent SendMessageBatch callers.
async fn sdk_ceiling(
    stack: &TestStack,
    clients: usize,
    body: &str,
    duration: Duration,
) -> anyhow::Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (sqs, url, body, stop) = (
            stack.sqs.clone(),
            stack.queue_url.clone(),
            body.to_owned(),
            Arc::clone(&stop),
        );
        callers.spawn(async move {
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let entries = (0..10)
                    .map(|i| {
                        SendMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .message_body(&body)
                            .build()
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let output = sqs
                    .send_message_batch()
                    .queue_url(&url)
                    .set_entries(Some(entries))
                    .send()
                    .await?;
                sent += output.successful().len() as u64;
            }
            anyhow::Ok(sent)
        });
    }
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for sent in callers.join_all().await {
        total += sent?;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// Runs `clients` keep-alive clients against a fresh ingest with `settings`.
async fn ingest_run(
    stack: &TestStack,
    settings: &[(&str, &str)],
    clients: usize,
    body: &str,
    duration: Duration,
) -> IngestRun {
    let mut settings = settings.to_vec();
    settings.push(("MAX_CONNECTIONS", "100000"));
    settings.push(("RUST_LOG", "warn"));
    let ingest = stack.spawn_ingest(&settings).await;
    let url = ingest.url("/webhooks/bench");
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (url, body, stop) = (url.clone(), body.to_owned(), Arc::clone(&stop));
        tasks.spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .expect("client");
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let response = client.post(&url).body(body.clone()).send().await;
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
    let elapsed = started.elapsed();
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
    let peak_rss = ingest.peak_rss_bytes();
    IngestRun {
        accepted_per_second: latencies.count() as f64 / elapsed.as_secs_f64(),
        latencies,
        sqs_requests_per_webhook: calls / accepted.max(1.0),
        peak_rss,
    }
}
