//! Benchmark of the worker draining a backlog from LocalStack into PostgreSQL, beside the
//! ceiling of plain SDK consumers on the same endpoint in the same run, so the figures are
//! ratios that survive a noisy machine.
//!
//! `scripts/bench.sh worker [--messages 10000] [--rounds 6] [--connections 4] [--set NAME=VALUE]
//! [--sdk-neighbour-cpu 20] [--trace]`
//! Each round, on fresh queues with a backlog of 1 KiB envelopes, in alternating order:
//! - the ceiling: `--sdk-loops` (8) concurrent loops of ReceiveMessage (10) +
//!   DeleteMessageBatch, no database, until the queue is empty (with the same
//!   `pg_stat_activity` sampling as the worker's drain, and with `--sdk-neighbour-cpu` a
//!   thread keeping that share of a core busy);
//! - the worker with default settings (plus `--set`) and `DATABASE_MAX_CONNECTIONS`:
//!   messages/s from its start until it reports every row stored, its SQS requests per message, rows
//!   per transaction and messages per receive (from its /metrics), the most connections,
//!   transactions in progress (both from `pg_stat_activity` every ~20 ms) and messages held
//!   (its gauge), its peak RSS, and the CPU seconds used by the worker, LocalStack and
//!   PostgreSQL during the drain.
//!
//! Medians over the rounds close the report. `--trace` prints where messages wait inside the
//! worker while it drains.

#![allow(
    clippy::print_stdout,
    reason = "the printed report is what a benchmark is for"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use clap::Parser;
use e2e_tests::probes::worker_activity;
use e2e_tests::report::{LOCALSTACK_CMDLINE, counter, cpu_seconds, cpu_seconds_of, median, mib};
use e2e_tests::{Service, TestStack};

/// Load settings.
#[derive(Debug, Parser)]
struct Args {
    /// Messages preloaded for each drain.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    messages: u32,
    /// Rounds (the ceiling and the worker, in alternating order); medians are reported.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// DATABASE_MAX_CONNECTIONS of the worker.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    connections: u32,
    /// Concurrent receive + delete loops of the plain SDK ceiling.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    sdk_loops: u32,
    /// Make the ceiling's receives ask for what the worker's ask for (SentTimestamp,
    /// ApproximateReceiveCount, all message attributes, a visibility timeout, a 20 s wait),
    /// to tell the cost of those parameters from the cost of the pipeline.
    #[arg(long)]
    sdk_receive_like_worker: bool,
    /// Burn this share of one core (in percent) beside the ceiling's drains, in short
    /// slices as a busy worker and database would: an experiment that shows how much of the
    /// gap is LocalStack sharing this machine's cores with the worker and PostgreSQL. The
    /// worker's drains are untouched.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100))]
    sdk_neighbour_cpu: u32,
    /// Print the worker's stages every 100 ms (held, waiting for a writer, writes, waiting for
    /// a delete, receives in flight / wanted): where the messages wait.
    #[arg(long)]
    trace: bool,
    /// Extra worker settings, NAME=VALUE (repeatable), e.g. --set WORKER_BATCH_MAX_ROWS=50.
    #[arg(long = "set", value_parser = e2e_tests::report::parse_setting)]
    settings: Vec<(String, String)>,
}

/// How often a drain is sampled (the worker's bounds and progress; `pg_stat_activity` also
/// beside the ceiling, so both drains carry the same measuring load).
const SAMPLE_PERIOD: Duration = Duration::from_millis(20);
/// The worker's /metrics (its progress and gauges) are read every this many samples:
/// rendering them costs the worker CPU, and 100 ms is fine enough for a drain of seconds.
const METRICS_EVERY: u64 = 5;

/// One drain of the SDK ceiling.
#[derive(Debug, Default)]
struct CeilingRun {
    per_second: f64,
    /// CPU seconds LocalStack used during the drain.
    cpu_localstack: f64,
    /// CPU of the benchmark's own process (SDK loops, sampling, neighbour) as a share of the
    /// drain's wall time.
    own_cpu_share: f64,
}

/// One worker drain.
#[derive(Debug, Default)]
struct WorkerRun {
    per_second: f64,
    requests_per_message: f64,
    rows_per_transaction: f64,
    messages_per_receive: f64,
    max_connections: i64,
    max_transactions: i64,
    max_held: f64,
    max_writes: f64,
    peak_rss_mib: f64,
    cpu_per_1000: f64,
    cpu_localstack: f64,
    cpu_postgres: f64,
    cpu_worker: f64,
    seconds: f64,
    first_row_seconds: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let messages = args.messages as usize;
    println!(
        "worker benchmark: {} messages of 1 KiB, {} round(s), DATABASE_MAX_CONNECTIONS={}, settings {:?}, neighbour of the ceiling {}% of a core\n",
        args.messages, args.rounds, args.connections, args.settings, args.sdk_neighbour_cpu
    );
    println!(
        "| round | SDK ceiling msg/s | LocalStack CPU s per 1000 msgs, SDK / worker | worker msg/s | / ceiling | SQS requests per message | rows per transaction | messages per receive | max connections | max transactions | max held | max writes (gauge) | peak RSS MiB | CPU s per 1000 msgs | CPU s worker / LocalStack / PostgreSQL |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut ceilings = Vec::new();
    let mut ceiling_cpu_shares = Vec::new();
    let mut runs = Vec::new();
    for round in 1..=args.rounds {
        // A fresh queue (and database) for each drain: LocalStack's queues slow down as
        // they age. The order alternates, so a drift of the machine favours neither.
        let sdk_first = round % 2 == 1;
        let mut sdk = None;
        if sdk_first {
            sdk = Some(sdk_drain(messages, &args).await?);
        }
        let stack = TestStack::new("bench-worker").await;
        let run = worker_run(&stack, &args).await?;
        stack.cleanup().await;
        if !sdk_first {
            sdk = Some(sdk_drain(messages, &args).await?);
        }
        let sdk = sdk.unwrap_or_default();
        let ceiling = sdk.per_second;
        println!(
            "| {round} | {ceiling:.0} | {:.2} / {:.2} | {:.0} | {:.2} | {:.3} | {:.1} | {:.2} | {} | {} | {:.0} | {:.0} | {:.1} | {:.3} | {:.1} / {:.1} / {:.1} |",
            sdk.cpu_localstack * 1000.0 / messages as f64,
            run.cpu_localstack * 1000.0 / messages as f64,
            run.per_second,
            run.per_second / ceiling,
            run.requests_per_message,
            run.rows_per_transaction,
            run.messages_per_receive,
            run.max_connections,
            run.max_transactions,
            run.max_held,
            run.max_writes,
            run.peak_rss_mib,
            run.cpu_per_1000,
            run.cpu_worker,
            run.cpu_localstack,
            run.cpu_postgres,
        );
        ceilings.push(ceiling);
        ceiling_cpu_shares.push(sdk.own_cpu_share);
        runs.push(run);
    }
    let of = |f: fn(&WorkerRun) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    // Each round's ratio pairs drains run back to back, so it is steadier than a ratio of
    // medians.
    let ratios: Vec<f64> = runs
        .iter()
        .zip(&ceilings)
        .map(|(run, ceiling)| run.per_second / ceiling)
        .collect();
    println!("\nmedians over {} round(s):", args.rounds);
    println!("- SDK ceiling: {:.0} msg/s", median(&ceilings));
    println!(
        "- CPU of the ceiling's own process during its drain (SDK loops, sampling{}): {:.0}% of its wall time",
        if args.sdk_neighbour_cpu > 0 {
            ", neighbour"
        } else {
            ""
        },
        100.0 * median(&ceiling_cpu_shares)
    );
    println!(
        "- worker: {:.0} msg/s = {:.2} of the ceiling (target >= 0.95)",
        of(|r| r.per_second),
        median(&ratios)
    );
    println!(
        "- worker start to its first stored row: {:.2} s (included in its msg/s)",
        of(|r| r.first_row_seconds)
    );
    println!(
        "- SQS requests per message: {:.3} (target <= 0.21)",
        of(|r| r.requests_per_message)
    );
    println!(
        "- rows per transaction: {:.1}; messages per receive: {:.2}",
        of(|r| r.rows_per_transaction),
        of(|r| r.messages_per_receive)
    );
    println!(
        "- peak RSS: {:.1} MiB (target <= 50); CPU seconds per 1000 messages: {:.3}",
        of(|r| r.peak_rss_mib),
        of(|r| r.cpu_per_1000)
    );
    println!(
        "- CPU during the drain, share of its wall time: worker {:.0}%, LocalStack {:.0}%, PostgreSQL {:.0}%",
        of(|r| 100.0 * r.cpu_worker / r.seconds),
        of(|r| 100.0 * r.cpu_localstack / r.seconds),
        of(|r| 100.0 * r.cpu_postgres / r.seconds)
    );
    let max = |f: fn(&WorkerRun) -> f64| runs.iter().map(f).fold(0.0, f64::max);
    println!(
        "- bounds, highest in any round: connections {} (pool {}), transactions in progress {}, writes gauge {}, messages held {}",
        max(|r| r.max_connections as f64),
        args.connections,
        max(|r| r.max_transactions as f64),
        max(|r| r.max_writes),
        max(|r| r.max_held)
    );
    Ok(())
}

/// The SDK ceiling on a fresh queue, with the same `pg_stat_activity` sampling as the
/// worker's drain and, with `--sdk-neighbour-cpu`, a busy neighbour.
async fn sdk_drain(messages: usize, args: &Args) -> anyhow::Result<CeilingRun> {
    let stack = TestStack::new("bench-worker-sdk").await;
    stack.preload(messages).await;
    let own_before = cpu_seconds(std::process::id()).unwrap_or_default();
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let neighbour =
        (args.sdk_neighbour_cpu > 0).then(|| burn_cpu(args.sdk_neighbour_cpu, Arc::clone(&stop)));
    let measuring = async {
        let mut ticks = tokio::time::interval(SAMPLE_PERIOD);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !stop.load(Ordering::Relaxed) {
            ticks.tick().await;
            worker_activity(&stack).await;
        }
    };
    let drain = async {
        let result = sdk_ceiling(
            &stack,
            messages,
            args.sdk_loops as usize,
            args.sdk_receive_like_worker,
        )
        .await;
        stop.store(true, Ordering::Relaxed);
        result
    };
    let ((), result) = tokio::join!(measuring, drain);
    let own = cpu_seconds(std::process::id()).unwrap_or_default() - own_before;
    let own_cpu_share = own / started.elapsed().as_secs_f64();
    if let Some(thread) = neighbour {
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("the neighbour thread panicked"))?;
    }
    stack.cleanup().await;
    let (per_second, cpu_localstack) = result?;
    Ok(CeilingRun {
        per_second,
        cpu_localstack,
        own_cpu_share,
    })
}

/// A thread that keeps `percent` of one core busy, in slices of a few milliseconds, until
/// `stop`.
fn burn_cpu(percent: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    const PERIOD: Duration = Duration::from_millis(5);
    let busy = PERIOD * percent / 100;
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let slice = Instant::now();
            while slice.elapsed() < busy {
                std::hint::spin_loop();
            }
            std::thread::sleep(PERIOD - busy);
        }
    })
}

/// Messages/s of `loops` plain SDK receive + delete loops draining the `messages` preloaded, and
/// the CPU seconds LocalStack used meanwhile.
async fn sdk_ceiling(
    stack: &TestStack,
    messages: usize,
    loops: usize,
    like_worker: bool,
) -> anyhow::Result<(f64, f64)> {
    let localstack_before = cpu_seconds_of(LOCALSTACK_CMDLINE);
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
                    .wait_time_seconds(if like_worker { 20 } else { 1 })
                    .set_visibility_timeout(like_worker.then_some(30))
                    .set_message_system_attribute_names(like_worker.then(|| {
                        vec![
                            MessageSystemAttributeName::SentTimestamp,
                            MessageSystemAttributeName::ApproximateReceiveCount,
                        ]
                    }))
                    .set_message_attribute_names(like_worker.then(|| vec!["All".to_owned()]))
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
    let localstack = cpu_seconds_of(LOCALSTACK_CMDLINE) - localstack_before;
    Ok((
        total as f64 / finished.duration_since(started).as_secs_f64(),
        localstack,
    ))
}

/// Highest values sampled during a drain.
#[derive(Debug, Default)]
struct Peaks {
    first_row: Option<Duration>,
    connections: i64,
    transactions: i64,
    held: f64,
    writes: f64,
}

/// Samples the worker until it has stored `messages` rows: its connections and open
/// transactions (`pg_stat_activity`) every 20 ms, and every 100 ms from its /metrics the
/// rows stored and the held and writes gauges. Returns the peaks and when the last row was stored. The
/// progress comes from /metrics, not from counting rows, so the measurement adds no scans
/// of the table to the database's load.
async fn sample(
    stack: &TestStack,
    worker: &Service,
    messages: u32,
    started: Instant,
    timeout: Duration,
    trace: bool,
) -> anyhow::Result<(Peaks, Instant)> {
    let http = reqwest::Client::new();
    let metrics_url = worker.ops_url("/metrics");
    let mut peaks = Peaks::default();
    let mut ticks = tokio::time::interval(SAMPLE_PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 0u64.. {
        ticks.tick().await;
        let (connections, transactions) = worker_activity(stack).await;
        peaks.connections = peaks.connections.max(connections);
        peaks.transactions = peaks.transactions.max(transactions);
        if !n.is_multiple_of(METRICS_EVERY) {
            continue;
        }
        let metrics = http.get(&metrics_url).send().await?.text().await?;
        let gauge = |name: &str, filter: &str| counter(&metrics, name, &[filter]);
        let stored = gauge("webhook_worker_messages_total", "outcome=\"stored\"");
        if stored > 0.0 && peaks.first_row.is_none() {
            peaks.first_row = Some(started.elapsed());
        }
        peaks.held = peaks.held.max(gauge("webhook_worker_in_flight ", ""));
        peaks.writes = peaks
            .writes
            .max(gauge("webhook_worker_writes_in_progress ", ""));
        if trace {
            println!(
                "held {} wait-write {} writes {} wait-delete {} receives {}/{}",
                gauge("webhook_worker_in_flight ", ""),
                gauge("webhook_worker_waiting_messages", "write"),
                gauge("webhook_worker_writes_in_progress ", ""),
                gauge("webhook_worker_waiting_messages", "delete"),
                gauge("webhook_worker_receives_in_flight ", ""),
                gauge("webhook_worker_receives_wanted ", ""),
            );
        }
        if stored >= f64::from(messages) {
            return Ok((peaks, Instant::now()));
        }
        if started.elapsed() > timeout {
            bail!("only {stored} of {messages} messages stored after {timeout:?}");
        }
    }
    unreachable!("the loop above only ends by returning")
}

/// Preloads the messages, starts the worker and waits until every row is stored.
async fn worker_run(stack: &TestStack, args: &Args) -> anyhow::Result<WorkerRun> {
    let messages = i64::from(args.messages);
    stack.preload(args.messages as usize).await;
    sqlx::query("TRUNCATE webhook_events, webhook_event_keys")
        .execute(&stack.db)
        .await
        .context("emptying the table")?;
    let connections = args.connections.to_string();
    let mut settings: Vec<(&str, &str)> = vec![
        ("DATABASE_MAX_CONNECTIONS", &connections),
        ("RUST_LOG", "warn"),
    ];
    settings.extend(args.settings.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    let (localstack_before, postgres_before) = (
        cpu_seconds_of(LOCALSTACK_CMDLINE),
        cpu_seconds_of("postgres"),
    );
    let started = Instant::now();
    let worker = stack.spawn_worker(&settings).await;
    let timeout = Duration::from_secs(60) + Duration::from_millis(20 * u64::from(args.messages));
    let (peaks, finished) =
        sample(stack, &worker, args.messages, started, timeout, args.trace).await?;
    let elapsed = finished.duration_since(started);
    let stored = stack.stored_count().await;
    if stored != messages {
        bail!("the worker reported {messages} messages stored, the table holds {stored} rows");
    }
    let cpu_worker = worker.pid().and_then(cpu_seconds).unwrap_or_default();
    let cpu_localstack = cpu_seconds_of(LOCALSTACK_CMDLINE) - localstack_before;
    let cpu_postgres = cpu_seconds_of("postgres") - postgres_before;
    let metrics = worker.metrics().await;
    let peak_rss = worker.peak_rss_bytes();
    worker.kill().await;

    let sqs = |operation: &str| {
        counter(
            &metrics,
            "webhook_sqs_requests_total",
            &[&format!(r#"operation="{operation}""#)],
        )
    };
    let requests = sqs("ReceiveMessage")
        + sqs("DeleteMessageBatch")
        + sqs("ChangeMessageVisibilityBatch")
        + sqs("SendMessage");
    let transactions = counter(&metrics, "webhook_worker_batch_rows_count", &[]);
    let rows = counter(&metrics, "webhook_worker_batch_rows_sum", &[]);
    let age_count = counter(&metrics, "webhook_worker_message_age_seconds_count", &[]);
    Ok(WorkerRun {
        per_second: messages as f64 / elapsed.as_secs_f64(),
        requests_per_message: requests / messages as f64,
        rows_per_transaction: rows / transactions.max(1.0),
        messages_per_receive: age_count / sqs("ReceiveMessage").max(1.0),
        max_connections: peaks.connections,
        max_transactions: peaks.transactions,
        max_held: peaks.held,
        max_writes: peaks.writes,
        peak_rss_mib: peak_rss.map_or(0.0, mib),
        cpu_per_1000: cpu_worker * 1000.0 / messages as f64,
        cpu_localstack,
        cpu_postgres,
        cpu_worker,
        seconds: elapsed.as_secs_f64(),
        first_row_seconds: peaks.first_row.unwrap_or_default().as_secs_f64(),
    })
}
