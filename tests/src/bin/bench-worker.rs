//! Benchmark of the worker draining a backlog from LocalStack into PostgreSQL, with the
//! ceiling of a plain SDK consumer measured in the same run on the same endpoint, so the
//! figures are ratios that survive a noisy machine.
//!
//! Run it with `scripts/bench.sh worker [--messages 5000] [--concurrency 16] [--connections 4]`
//! (which starts the local stack and builds in release mode). Each run preloads the same
//! number of envelopes on a fresh queue, then measures:
//! - the ceiling: concurrency / 10 (at least 1) plain SDK loops of ReceiveMessage (10, wait
//!   1 s) + DeleteMessageBatch until the queue is empty, in messages/s;
//! - the worker (`WORKER_CONCURRENCY`, `DATABASE_MAX_CONNECTIONS`): messages/s from its start
//!   until every row is in `webhook_events`, the most connections it held at once (sampled
//!   from `pg_stat_activity` every ~20 ms), p50/p99 end-to-end latency from the rows
//!   (`stored_at - received_at`, which includes the time spent waiting in the preloaded
//!   backlog) and its peak RSS.

#![allow(
    clippy::print_stdout,
    reason = "the printed report is what a benchmark is for"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use clap::Parser;
use e2e_tests::TestStack;
use e2e_tests::report::mib;

/// The `application_name` the worker's pool gives its connections.
const WORKER_APPLICATION_NAME: &str = "scalable-webhook-worker";

/// Load settings.
#[derive(Debug, Parser)]
struct Args {
    /// Messages preloaded for each run.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..))]
    messages: u32,
    /// WORKER_CONCURRENCY of the worker; the SDK ceiling uses concurrency / 10 receive loops
    /// (at least 1).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    concurrency: u32,
    /// DATABASE_MAX_CONNECTIONS of the worker.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    connections: u32,
}

/// What the worker run measured.
struct WorkerRun {
    messages_per_second: f64,
    max_db_connections: i64,
    p50_ms: f64,
    p99_ms: f64,
    peak_rss: Option<u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let stack = TestStack::new("bench-worker").await;
    let messages = args.messages as usize;
    let loops = (args.concurrency as usize / 10).max(1);

    let ceiling = sdk_ceiling(&stack, messages, loops).await?;
    stack.purge().await;
    let worker = worker_run(&stack, &args).await?;
    stack.purge().await;

    let mut out = String::new();
    out += &format!(
        "worker benchmark: {} messages, WORKER_CONCURRENCY={}, DATABASE_MAX_CONNECTIONS={}, LocalStack at {}\n\n",
        args.messages, args.concurrency, args.connections, stack.queue_url
    );
    out += "| run | messages/s | max DB connections | p50 end-to-end ms | p99 end-to-end ms | peak RSS MiB |\n|---|---|---|---|---|---|\n";
    out += &format!(
        "| plain SDK client, {loops} loop(s) of ReceiveMessage (10) + DeleteMessageBatch | {ceiling:.0} | | | | |\n"
    );
    out += &format!(
        "| worker, concurrency {}, pool {} | {:.0} | {} | {:.0} | {:.0} | {} |\n\n",
        args.concurrency,
        args.connections,
        worker.messages_per_second,
        worker.max_db_connections,
        worker.p50_ms,
        worker.p99_ms,
        worker
            .peak_rss
            .map_or_else(|| "?".to_owned(), |b| format!("{:.1}", mib(b)))
    );
    out += &format!(
        "worker / SDK ceiling: {:.2} (target >= 0.9 when the database is not the limit)\n",
        worker.messages_per_second / ceiling
    );
    out += &format!(
        "peak RSS of the worker: {} MiB (target <= 50)\n",
        worker
            .peak_rss
            .map_or_else(|| "?".to_owned(), |b| format!("{:.1}", mib(b)))
    );
    out += &format!(
        "max DB connections: {} of DATABASE_MAX_CONNECTIONS={} ({})\n",
        worker.max_db_connections,
        args.connections,
        if worker.max_db_connections <= i64::from(args.connections) {
            "within the pool size"
        } else {
            "ABOVE the pool size"
        }
    );
    out += "(end-to-end latency includes the time each message waited in the preloaded backlog)\n";
    print!("{out}");
    stack.cleanup().await;
    Ok(())
}

/// Messages/s a plain SDK consumer reaches with `loops` concurrent receive + delete loops,
/// draining `messages` preloaded messages.
async fn sdk_ceiling(stack: &TestStack, messages: usize, loops: usize) -> anyhow::Result<f64> {
    stack.preload(messages).await;
    let deleted = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut consumers = tokio::task::JoinSet::new();
    for _ in 0..loops {
        let (sqs, url, deleted) = (
            stack.sqs.clone(),
            stack.queue_url.clone(),
            Arc::clone(&deleted),
        );
        consumers.spawn(async move {
            let mut last_delete = None;
            let mut empty_receives = 0;
            // Until every message is deleted; a few empty receives in a row mean the queue
            // is empty (or what is left is in another loop's hands).
            while deleted.load(Ordering::Relaxed) < messages && empty_receives < 3 {
                let received = sqs
                    .receive_message()
                    .queue_url(&url)
                    .max_number_of_messages(10)
                    .wait_time_seconds(1)
                    .send()
                    .await?
                    .messages
                    .unwrap_or_default();
                if received.is_empty() {
                    empty_receives += 1;
                    continue;
                }
                empty_receives = 0;
                let entries = received
                    .into_iter()
                    .enumerate()
                    .map(|(i, message)| {
                        DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .set_receipt_handle(message.receipt_handle)
                            .build()
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let output = sqs
                    .delete_message_batch()
                    .queue_url(&url)
                    .set_entries(Some(entries))
                    .send()
                    .await?;
                if !output.failed().is_empty() {
                    bail!("DeleteMessageBatch failed entries: {:?}", output.failed());
                }
                deleted.fetch_add(output.successful().len(), Ordering::Relaxed);
                last_delete = Some(Instant::now());
            }
            anyhow::Ok(last_delete)
        });
    }
    let mut finished = started;
    for last_delete in consumers.join_all().await {
        if let Some(at) = last_delete? {
            finished = finished.max(at);
        }
    }
    let total = deleted.load(Ordering::Relaxed);
    if total < messages {
        bail!("the SDK consumer deleted only {total} of {messages} messages");
    }
    Ok(total as f64 / finished.duration_since(started).as_secs_f64())
}

/// Preloads the messages, starts the worker and waits until every row is stored, sampling
/// the worker's database connections meanwhile.
async fn worker_run(stack: &TestStack, args: &Args) -> anyhow::Result<WorkerRun> {
    let messages = i64::from(args.messages);
    stack.preload(args.messages as usize).await;

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn({
        let (db, stop) = (stack.db.clone(), Arc::clone(&stop));
        async move {
            let mut max = 0i64;
            let mut ticks = tokio::time::interval(Duration::from_millis(20));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.load(Ordering::Relaxed) {
                ticks.tick().await;
                let connections: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND application_name = $1",
                )
                .bind(WORKER_APPLICATION_NAME)
                .fetch_one(&db)
                .await
                .context("sampling pg_stat_activity")?;
                max = max.max(connections);
            }
            anyhow::Ok(max)
        }
    });

    let started = Instant::now();
    let (concurrency, connections) = (args.concurrency.to_string(), args.connections.to_string());
    let worker = stack
        .spawn_worker(&[
            ("WORKER_CONCURRENCY", &concurrency),
            ("DATABASE_MAX_CONNECTIONS", &connections),
            ("RUST_LOG", "warn"),
        ])
        .await;
    let timeout = Duration::from_secs(60) + Duration::from_millis(20 * u64::from(args.messages));
    loop {
        let stored = stack.stored_count().await;
        if stored >= messages {
            break;
        }
        if started.elapsed() > timeout {
            bail!(
                "only {stored} of {messages} rows after {timeout:?}; worker log:\n{}",
                worker.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let max_db_connections = sampler.await??;
    let peak_rss = worker.peak_rss_bytes();
    worker.kill().await;

    let (p50_ms, p99_ms): (Option<f64>, Option<f64>) = sqlx::query_as(
        "SELECT \
           percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - received_at)::float8 * 1000), \
           percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - received_at)::float8 * 1000) \
         FROM webhook_events",
    )
    .fetch_one(&stack.db)
    .await
    .context("end-to-end percentiles")?;

    Ok(WorkerRun {
        messages_per_second: messages as f64 / elapsed.as_secs_f64(),
        max_db_connections,
        p50_ms: p50_ms.unwrap_or_default(),
        p99_ms: p99_ms.unwrap_or_default(),
        peak_rss,
    })
}
