//! Benchmark of fairness between sources: one source floods ingest with `--flood` webhooks
//! (closed loop, `--clients` keep-alive clients) while another sends `--quiet-rate` a second
//! (open loop, every latency from its due time); the quiet source's request to commit is
//! measured without and then with `FAIR_QUEUE_GROUPS` (one run each, fresh ingest, same
//! worker and queue, drained in between).
//!
//! Run it with `scripts/bench.sh fairness [--flood 20000] [--quiet-rate 10] [--set NAME=VALUE]`. It prints, for
//! each round, the quiet source's request-to-commit p50 / p99 / max, the flood's time to be
//! stored, and the worker's per-source message age at receive (how long each source's
//! webhooks waited in the queue, from `webhook_worker_source_message_age_seconds`).
//! LocalStack 4.13.1 keeps the groups but delivers in send order, so locally both rounds
//! should look alike; on AWS a fair queue serves the quiet group first.

#![allow(
    clippy::print_stdout,
    reason = "the printed report is what a benchmark is for"
)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use e2e_tests::latency::{self, Commits};
use e2e_tests::report::{Latencies, histogram_buckets_with, quantile_between};
use e2e_tests::{Service, TestStack};
use tokio::time::Instant;

/// Longest wait for a round's webhooks to be stored.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);

/// Load settings.
#[derive(Debug, Parser)]
struct Args {
    /// Webhooks the flooding source sends.
    #[arg(long, default_value_t = 20_000)]
    flood: u64,
    /// Webhooks a second of the quiet source.
    #[arg(long, default_value_t = 10.0)]
    quiet_rate: f64,
    /// Keep-alive clients of the flood.
    #[arg(long, default_value_t = 64)]
    clients: u64,
    /// Extra worker settings, NAME=VALUE (repeatable), e.g. --set MAX_MESSAGES_PER_SECOND=300
    /// for a database slower than the flood, so that a backlog builds in the queue.
    #[arg(long = "set", value_parser = e2e_tests::report::parse_setting)]
    settings: Vec<(String, String)>,
}

/// One round's figures.
struct Round {
    fair: bool,
    quiet: Latencies,
    quiet_missing: usize,
    flood_seconds: f64,
    stored_seconds: f64,
    /// p50 and p99 of the age at receive, seconds, for `flood` and `quiet`.
    ages: [(Option<f64>, Option<f64>); 2],
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let stack = TestStack::new("bench-fairness").await;
    latency::install_commit_triggers(&stack.db).await?;
    let commits = Commits::listen(&stack.database_url).await?;
    let mut settings = vec![("METRICS_SOURCES", "flood,quiet"), ("RUST_LOG", "warn")];
    settings.extend(args.settings.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    let worker = stack.spawn_worker(&settings).await;
    let mut rounds = Vec::new();
    for fair in [false, true] {
        let ingest = stack
            .spawn_ingest(&[
                ("MAX_CONNECTIONS", "100000"),
                ("RUST_LOG", "warn"),
                ("FAIR_QUEUE_GROUPS", if fair { "true" } else { "false" }),
            ])
            .await;
        rounds.push(round(&args, &stack, &worker, &ingest, &commits, fair).await?);
        ingest.kill().await;
    }
    print!("{}", report(&args, &rounds));
    worker.kill().await;
    stack.cleanup().await;
    Ok(())
}

/// One POST of `tag` to `url`; whether it got a 2xx.
fn post(
    client: &reqwest::Client,
    url: &str,
    tag: &str,
) -> impl Future<Output = bool> + Send + 'static + use<> {
    let request = client
        .post(url)
        .header("content-type", "application/json")
        .body(format!(r#"{{"tag":"{tag}","pad":"{}"}}"#, "x".repeat(200)));
    async move {
        request
            .send()
            .await
            .is_ok_and(|response| response.status().is_success())
    }
}

/// The flood and the quiet source at once, then the drain.
async fn round(
    args: &Args,
    stack: &TestStack,
    worker: &Service,
    ingest: &Service,
    commits: &Commits,
    fair: bool,
) -> anyhow::Result<Round> {
    let phase = if fair { "fair" } else { "plain" };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let before = worker.metrics().await;
    let committed_before = commits.len() as u64;
    let started = Instant::now();
    let flooding = AtomicBool::new(true);
    let flood_run = async {
        let (total, url, phase) = (args.flood, ingest.url("/webhooks/flood"), phase.to_owned());
        let client = client.clone();
        let accepted = latency::closed_loop(
            args.clients,
            move |k| k >= total,
            move |k| post(&client, &url, &format!("{phase}-flood-{k}")),
        )
        .await;
        flooding.store(false, Ordering::Relaxed);
        (accepted, started.elapsed().as_secs_f64())
    };
    // The quiet source for as long as the flood lasts, at least 10 s.
    let quiet_tag = format!("{phase}-quiet");
    let quiet_url = ingest.url("/webhooks/quiet");
    let quiet_run = async {
        let mut requests = Vec::new();
        while flooding.load(Ordering::Relaxed) || requests.is_empty() {
            let offset = requests.len() as u64;
            let batch = latency::open_loop(args.quiet_rate, Duration::from_secs(10), 1000, |k| {
                post(&client, &quiet_url, &latency::tag(&quiet_tag, offset + k))
            })
            .await;
            requests.extend(batch.into_iter().map(|mut r| {
                r.k += offset;
                r
            }));
        }
        requests
    };
    let ((flood_accepted, flood_seconds), quiet) = tokio::join!(flood_run, quiet_run);
    let quiet_accepted = quiet.iter().filter(|r| r.accepted()).count() as u64;
    let expected = committed_before + flood_accepted + quiet_accepted;
    let until = Instant::now() + DRAIN_TIMEOUT;
    while (commits.len() as u64) < expected {
        anyhow::ensure!(
            Instant::now() < until,
            "round {phase} not stored within {DRAIN_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stored_seconds = started.elapsed().as_secs_f64();
    let after = worker.metrics().await;
    let age = |source: &str| {
        let name = "webhook_worker_source_message_age_seconds";
        let labels = format!(r#"source="{source}","#);
        let (b, a) = (
            histogram_buckets_with(&before, name, &labels),
            histogram_buckets_with(&after, name, &labels),
        );
        (
            quantile_between(&b, &a, 0.5),
            quantile_between(&b, &a, 0.99),
        )
    };
    let mut latencies = Vec::new();
    let mut missing = 0;
    for request in quiet.iter().filter(|r| r.accepted()) {
        match commits.at(&latency::tag(&quiet_tag, request.k)) {
            Some(at) => latencies.push(at.saturating_duration_since(request.due)),
            None => missing += 1,
        }
    }
    stack
        .wait_for_empty(&stack.queue_url, Duration::from_secs(30))
        .await;
    Ok(Round {
        fair,
        quiet: Latencies::new(latencies),
        quiet_missing: missing,
        flood_seconds,
        stored_seconds,
        ages: [age("flood"), age("quiet")],
    })
}

fn report(args: &Args, rounds: &[Round]) -> String {
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |s| format!("{:.0}", s * 1e3));
    let mut out = format!(
        "\nfairness benchmark: source `flood` sends {} webhooks from {} clients while `quiet` sends {}/s (open loop); worker settings {:?}\n\n",
        args.flood, args.clients, args.quiet_rate, args.settings
    );
    for round in rounds {
        out += &format!(
            "FAIR_QUEUE_GROUPS={}: quiet request to commit p50 / p99 / max {:.0} / {:.0} / {:.0} ms ({} webhooks, {} not stored); flood sent in {:.1} s, everything stored after {:.1} s; age at receive p50 / p99: flood {} / {} ms, quiet {} / {} ms\n",
            round.fair,
            round.quiet.percentile_ms(50.0),
            round.quiet.percentile_ms(99.0),
            round.quiet.percentile_ms(100.0),
            round.quiet.count(),
            round.quiet_missing,
            round.flood_seconds,
            round.stored_seconds,
            ms(round.ages[0].0),
            ms(round.ages[0].1),
            ms(round.ages[1].0),
            ms(round.ages[1].1),
        );
    }
    out
}
