//! Part 2: the worker's writes while `worker maintain` detaches (CONCURRENTLY) and drops an
//! old partition of 1M rows, against the same writes with no maintenance.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use chrono::{DateTime, Utc};
use e2e_tests::report::{histogram_buckets, median, quantile_between};
use e2e_tests::{Service, TestStack};
use sqlx::PgPool;

/// The worker's histogram of one batch write, BEGIN to COMMIT.
const DB_WRITE_SECONDS: &str = "webhook_worker_db_write_seconds";
/// How old the filled partition is: past the 90-day retention.
const OLD_DAYS: i64 = 120;
/// The retention `worker maintain` applies.
const RETENTION: &str = "90d";

/// Settings of the retention part.
#[derive(Debug, clap::Args)]
pub(crate) struct RetentionArgs {
    /// Messages per second sent straight to SQS for the worker while the part runs.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(10..))]
    rate: u32,
    /// Seconds per phase (idle, or with `worker maintain`).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(5..))]
    phase_seconds: u64,
    /// Seconds into the maintain phase at which `worker maintain` starts.
    #[arg(long, default_value_t = 10)]
    maintain_after: u64,
    /// Rounds (the old partition filled again each round).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    retention_rounds: u32,
    /// Rows in the old partition.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u32).range(1..))]
    old_rows: u32,
    /// Body bytes of the old rows.
    #[arg(long, default_value_t = 512)]
    old_body_bytes: u32,
}

/// One phase's figures.
#[derive(Debug, Default)]
struct Phase {
    writes: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Upper bound of the highest bucket that got a write.
    max_bucket_ms: f64,
    rows: i64,
    stored_p50_ms: f64,
    stored_p99_ms: f64,
    stored_max_ms: f64,
}

pub(crate) async fn run(args: &RetentionArgs) -> anyhow::Result<()> {
    println!(
        "\n## writes during retention: {} msg/s to SQS, the release worker with default settings, {} s phases, {} round(s); an old partition of {} rows ({} B bodies, no keys in webhook_event_keys: theirs were trimmed long ago at DEDUP_HORIZON 30d), maintain with RETENTION={RETENTION} {} s into its phase\n",
        args.rate,
        args.phase_seconds,
        args.retention_rounds,
        args.old_rows,
        args.old_body_bytes,
        args.maintain_after
    );
    let stack = TestStack::new("bench-partitions-retention").await;
    let worker = stack.spawn_worker(&[]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let sender = tokio::spawn(send_steadily(
        stack.sqs.clone(),
        stack.queue_url.clone(),
        args.rate,
        Arc::clone(&stop),
        Arc::clone(&sent),
    ));
    // Warm up: the worker reaches its steady state before the first phase.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (mut idle, mut during) = (Vec::new(), Vec::new());
    println!(
        "| round | phase | writes | write p50 / p99 / max ms (histogram) | rows | stored_at - received_at p50 / p99 / max ms | maintain |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut fills = Vec::new();
    for round in 1..=args.retention_rounds {
        let fill = fill_old_partition(&stack.db, args).await?;
        fills.push(fill);
        let maintain_first = round % 2 == 0;
        for maintaining in [maintain_first, !maintain_first] {
            let (phase, maintain) = measure(&stack, &worker, args, maintaining).await?;
            println!(
                "| {round} | {} | {:.0} | {:.1} / {:.1} / <= {:.0} | {} | {:.1} / {:.1} / {:.1} | {} |",
                if maintaining { "maintain" } else { "idle" },
                phase.writes,
                phase.p50_ms,
                phase.p99_ms,
                phase.max_bucket_ms,
                phase.rows,
                phase.stored_p50_ms,
                phase.stored_p99_ms,
                phase.stored_max_ms,
                maintain.as_deref().unwrap_or("-")
            );
            if maintaining { &mut during } else { &mut idle }.push(phase);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = sender.await;
    let status = worker.terminate(Duration::from_secs(30)).await;
    println!(
        "\nfilling the old partition, per round (CREATE + INSERT ... SELECT generate_series, then ATTACH, which builds its indexes and checks its range):"
    );
    for (round, (insert, attach)) in fills.iter().enumerate() {
        println!(
            "- round {}: insert {:.1} s, attach {:.1} s",
            round + 1,
            insert.as_secs_f64(),
            attach.as_secs_f64()
        );
    }
    let of =
        |phases: &[Phase], f: fn(&Phase) -> f64| median(&phases.iter().map(f).collect::<Vec<_>>());
    println!(
        "\nmedians over {} round(s), idle / during maintain:",
        args.retention_rounds
    );
    println!(
        "- write p50 {:.1} / {:.1} ms; p99 {:.1} / {:.1} ms (ratio during / idle {:.2}); max bucket <= {:.0} / {:.0} ms",
        of(&idle, |p| p.p50_ms),
        of(&during, |p| p.p50_ms),
        of(&idle, |p| p.p99_ms),
        of(&during, |p| p.p99_ms),
        of(&during, |p| p.p99_ms) / of(&idle, |p| p.p99_ms),
        of(&idle, |p| p.max_bucket_ms),
        of(&during, |p| p.max_bucket_ms)
    );
    println!(
        "- stored_at - received_at p50 {:.1} / {:.1} ms; p99 {:.1} / {:.1} ms (ratio {:.2}); max {:.1} / {:.1} ms",
        of(&idle, |p| p.stored_p50_ms),
        of(&during, |p| p.stored_p50_ms),
        of(&idle, |p| p.stored_p99_ms),
        of(&during, |p| p.stored_p99_ms),
        of(&during, |p| p.stored_p99_ms) / of(&idle, |p| p.stored_p99_ms),
        of(&idle, |p| p.stored_max_ms),
        of(&during, |p| p.stored_max_ms)
    );
    let dlq = stack.messages_in(&stack.dlq_url).await;
    println!(
        "- sent {} messages; in the DLQ {dlq}; worker exit {status}",
        sent.load(Ordering::Relaxed)
    );
    stack.cleanup().await;
    Ok(())
}

/// Sends `rate` small envelopes a second straight to the main queue, ten per call, until
/// `stop`; a slow call never delays the next.
async fn send_steadily(
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    rate: u32,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) {
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(10.0 / f64::from(rate)));
    let mut calls = tokio::task::JoinSet::new();
    while !stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        let entries: Vec<SendMessageBatchRequestEntry> = TestStack::envelopes("steady", 10)
            .iter()
            .enumerate()
            .filter_map(|(i, envelope)| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(envelope.to_json())
                    .build()
                    .ok()
            })
            .collect();
        let (sqs, url, sent) = (sqs.clone(), queue_url.clone(), Arc::clone(&sent));
        calls.spawn(async move {
            if let Ok(output) = sqs
                .send_message_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
            {
                sent.fetch_add(output.successful().len() as u64, Ordering::Relaxed);
            }
        });
        while calls.try_join_next().is_some() {}
    }
    calls.join_all().await;
}

/// Creates, fills and attaches the partition of the day `OLD_DAYS` ago; returns the time of
/// the insert and of the attach.
async fn fill_old_partition(
    db: &PgPool,
    args: &RetentionArgs,
) -> anyhow::Result<(Duration, Duration)> {
    let (name, from, to) = old_partition();
    let (from, to) = (from.to_rfc3339(), to.to_rfc3339());
    let started = Instant::now();
    sqlx::raw_sql(&format!(
        "CREATE TABLE \"{name}\" (LIKE webhook_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE);
         INSERT INTO \"{name}\" (source, id, received_at, stored_at, headers, content_type, body, payload)
         SELECT 'bench', 'old-' || g, t, t, '{{}}'::jsonb, 'application/json', convert_to(repeat('x', {bytes}), 'UTF8'), NULL
         FROM generate_series(1, {rows}) g,
              LATERAL (SELECT '{from}'::timestamptz + (g - 1) * interval '86399 seconds' / {rows} AS t) s",
        bytes = args.old_body_bytes,
        rows = args.old_rows,
    ))
    .execute(db)
    .await
    .context("filling the old partition")?;
    let inserted = started.elapsed();
    let started = Instant::now();
    sqlx::raw_sql(&format!(
        "ALTER TABLE webhook_events ATTACH PARTITION \"{name}\" FOR VALUES FROM ('{from}') TO ('{to}')"
    ))
    .execute(db)
    .await
    .context("attaching the old partition")?;
    Ok((inserted, started.elapsed()))
}

/// Name and range of the daily partition `OLD_DAYS` ago, named as the worker names them.
fn old_partition() -> (String, DateTime<Utc>, DateTime<Utc>) {
    let day = (Utc::now() - chrono::Duration::days(OLD_DAYS)).date_naive();
    let from = day.and_time(chrono::NaiveTime::MIN).and_utc();
    (
        format!("webhook_events_p{}", day.format("%Y%m%d")),
        from,
        from + chrono::Duration::days(1),
    )
}

/// One phase: the worker's write histogram and its rows over `--phase-seconds`, with
/// `worker maintain` started `--maintain-after` seconds in when `maintaining`. Returns the
/// figures and, for a maintain phase, what maintain did and how long it took.
async fn measure(
    stack: &TestStack,
    worker: &Service,
    args: &RetentionArgs,
    maintaining: bool,
) -> anyhow::Result<(Phase, Option<String>)> {
    let from: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&stack.db)
        .await?;
    let before = histogram_buckets(&worker.metrics().await, DB_WRITE_SECONDS);
    let phase_end = tokio::time::Instant::now() + Duration::from_secs(args.phase_seconds);
    let maintain = async {
        if !maintaining {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_secs(args.maintain_after)).await;
        maintain(stack).await.map(Some)
    };
    let (maintain, ()) = tokio::join!(maintain, tokio::time::sleep_until(phase_end));
    let maintain = maintain?;
    let after = histogram_buckets(&worker.metrics().await, DB_WRITE_SECONDS);
    let to: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&stack.db)
        .await?;
    let writes = after.last().map_or(0.0, |l| l.1) - before.last().map_or(0.0, |l| l.1);
    // The buckets are cumulative: the slowest write is in the first one that holds them all.
    let max_bucket_ms = after
        .iter()
        .zip(&before)
        .find(|((_, a), (_, b))| a - b >= writes)
        .map_or(0.0, |((le, _), _)| *le * 1000.0);
    let quantile = |q| quantile_between(&before, &after, q).unwrap_or_default() * 1000.0;
    // received_at bounds the scan to today's partitions.
    let (rows, p50, p99, max): (i64, Option<f64>, Option<f64>, Option<f64>) = sqlx::query_as(
        "SELECT count(*),
                percentile_cont(0.5) WITHIN GROUP (ORDER BY ms),
                percentile_cont(0.99) WITHIN GROUP (ORDER BY ms),
                max(ms)
         FROM (SELECT extract(epoch FROM stored_at - received_at)::float8 * 1000 AS ms
               FROM webhook_events
               WHERE source = 'steady' AND received_at >= $1::timestamptz - interval '10 minutes'
                 AND stored_at >= $1 AND stored_at < $2) r",
    )
    .bind(from)
    .bind(to)
    .fetch_one(&stack.db)
    .await?;
    let phase = Phase {
        writes,
        p50_ms: quantile(0.5),
        p99_ms: quantile(0.99),
        max_bucket_ms,
        rows,
        stored_p50_ms: p50.unwrap_or_default(),
        stored_p99_ms: p99.unwrap_or_default(),
        stored_max_ms: max.unwrap_or_default(),
    };
    Ok((phase, maintain))
}

/// Runs `worker maintain` with the retention; returns how long it took and, from its log
/// lines, how long its DETACH CONCURRENTLY and its DROP took.
async fn maintain(stack: &TestStack) -> anyhow::Result<String> {
    let started = Instant::now();
    let started_at = Utc::now();
    let (status, log) = stack
        .run_worker_command(&["maintain"], &[("RETENTION", RETENTION)])
        .await;
    let total = started.elapsed();
    anyhow::ensure!(status.success(), "worker maintain failed:\n{log}");
    let line = |message: &str| log.lines().find(|line| line.contains(message));
    let dropped_at = line("partition dropped")
        .and_then(|line| {
            line.split_whitespace()
                .next()?
                .parse::<DateTime<Utc>>()
                .ok()
        })
        .map(|at| (at - started_at).num_milliseconds());
    let took = |message: &str| {
        line(message)
            .and_then(|line| line.split("elapsed_ms=").nth(1)?.split_whitespace().next())
            .map_or("?".to_owned(), |ms| format!("{ms} ms"))
    };
    Ok(format!(
        "run {} ms (dropped at +{} ms by its log); DETACH CONCURRENTLY {}, DROP {}",
        total.as_millis(),
        dropped_at.map_or("?".to_owned(), |ms| ms.to_string()),
        took("partition detached"),
        took("partition dropped")
    ))
}
