//! The slow-uploads attack of issue 18 (item 7) as a benchmark that prints its figures: one
//! ingest with a bucket, `MAX_BODY_BYTES` 32 MiB and a GitHub source; 100 connections send the
//! head of a 2,000,000-byte POST with a forged signature and 1 KiB of body, then stall, and 400
//! more do the same for 100,000-byte bodies; meanwhile 20 correctly signed 1 KiB webhooks and
//! 4 signed 2 MB ones are sent at once and timed. Target: 202 within 5 s and 20 s.
//!
//! Two runs: with `MIN_BODY_BYTES_PER_SECOND=0` (the stalled uploads stay open throughout: the
//! budget alone must let signed webhooks in), then with the defaults (the stalled uploads get
//! 408 after the grace). `scripts/bench.sh slow-uploads` runs it.

#![allow(
    clippy::print_stdout,
    reason = "the printed report is what a benchmark is for"
)]

use std::time::Duration;

use clap::Parser;
use e2e_tests::TestStack;
use e2e_tests::large::spawn_offloading_ingest;
use e2e_tests::report::{Latencies, counter, mib};
use e2e_tests::slow_uploads::{Ending, Signed, open_stalled, send_signed};

/// The attack's sizes.
#[derive(Debug, Parser)]
struct Args {
    /// Stalled forged uploads declaring 2,000,000 bytes (streamed to S3).
    #[arg(long, default_value_t = 100)]
    large_stalled: usize,
    /// Stalled forged uploads declaring 100,000 bytes (read into memory).
    #[arg(long, default_value_t = 400)]
    small_stalled: usize,
    /// Body bytes each stalled upload sends before stalling.
    #[arg(long, default_value_t = 1024)]
    sent_bytes: usize,
    /// Signed 1 KiB webhooks sent during the attack.
    #[arg(long, default_value_t = 20)]
    signed_small: usize,
    /// Signed 2 MB webhooks sent during the attack.
    #[arg(long, default_value_t = 4)]
    signed_large: usize,
    /// An ingest setting for every run, as NAME=VALUE (repeatable).
    #[arg(long = "set", value_parser = e2e_tests::report::parse_setting)]
    settings: Vec<(String, String)>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    e2e_tests::attack::raise_open_files_limit();
    let stack = TestStack::new("bench-slow-uploads").await;
    let bucket = stack.create_bucket().await;
    println!(
        "slow-uploads benchmark ({} build): {} stalled forged 2,000,000-byte uploads and {} stalled forged 100,000-byte ones, {} B sent each; meanwhile {} signed 1 KiB and {} signed 2 MB webhooks; settings {:?}\n",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        args.large_stalled,
        args.small_stalled,
        args.sent_bytes,
        args.signed_small,
        args.signed_large,
        args.settings,
    );
    println!(
        "| run | stalled open | budget held by them | signed 1 KiB: 202 / sent, p50, max | signed 2 MB: 202 / sent, p50, max | stalled answered 408 (after, p50 / max) | 408 counted (min_rate) | peak RSS MiB | targets (1 KiB ≤ 5 s, 2 MB ≤ 20 s) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, rate) in [
        ("MIN_BODY_BYTES_PER_SECOND=0", Some("0")),
        ("defaults", None),
    ] {
        let mut settings: Vec<(&str, &str)> =
            vec![("MAX_BODY_BYTES", "33554432"), ("RUST_LOG", "warn")];
        settings.extend(rate.map(|r| ("MIN_BODY_BYTES_PER_SECOND", r)));
        settings.extend(args.settings.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        run(&stack, &bucket, name, &settings, &args).await;
    }
    stack.cleanup().await;
    Ok(())
}

/// One run against a fresh ingest; prints its row.
async fn run(stack: &TestStack, bucket: &str, name: &str, settings: &[(&str, &str)], args: &Args) {
    let ingest = spawn_offloading_ingest(stack, bucket, settings).await;
    let addr = ingest.url("").trim_start_matches("http://").to_owned();
    let (large, small) = tokio::join!(
        open_stalled(&addr, args.large_stalled, 2_000_000, args.sent_bytes),
        open_stalled(&addr, args.small_stalled, 100_000, args.sent_bytes),
    );
    let stalled: Vec<_> = large.into_iter().chain(small).collect();
    let open = stalled.len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = counter(
        &ingest.metrics().await,
        "webhook_ingest_body_budget_in_use_bytes",
        &[],
    );
    let endings = tokio::spawn(async move {
        let mut waiting = tokio::task::JoinSet::new();
        for upload in stalled {
            waiting.spawn(upload.ending(Duration::from_secs(40)));
        }
        let mut endings = Vec::new();
        while let Some(ending) = waiting.join_next().await {
            endings.extend(ending.ok());
        }
        endings
    });
    let (small, large) = tokio::join!(
        send_signed(&ingest, args.signed_small, 1024, Duration::from_secs(30)),
        send_signed(
            &ingest,
            args.signed_large,
            2_000_000,
            Duration::from_secs(60)
        ),
    );
    let endings: Vec<Ending> = if name.ends_with("=0") {
        endings.abort();
        Vec::new()
    } else {
        endings.await.unwrap_or_default()
    };
    let timed_out: Vec<Duration> = endings
        .iter()
        .filter(|e| e.status == Some(408) && e.closed)
        .map(|e| e.after)
        .collect();
    let answered = timed_out.len();
    let cut = Latencies::new(timed_out);
    let metrics = ingest.metrics().await;
    let counted = 0.0_f64.max(counter(
        &metrics,
        "webhook_ingest_body_timeouts_total",
        &[r#"reason="min_rate""#],
    ));
    let met = |signed: &[Signed], limit: Duration| {
        !signed.is_empty() && signed.iter().all(|s| s.status == 202 && s.latency <= limit)
    };
    let verdict = if met(&small, Duration::from_secs(5)) && met(&large, Duration::from_secs(20)) {
        "met"
    } else {
        "not met"
    };
    let cut_figures = if endings.is_empty() {
        "(held open throughout)".to_owned()
    } else {
        format!(
            "{answered} / {open} ({:.1} s / {:.1} s)",
            cut.percentile_ms(50.0) / 1000.0,
            cut.percentile_ms(100.0) / 1000.0
        )
    };
    println!(
        "| {name} | {open} | {:.0} KiB | {} | {} | {cut_figures} | {counted:.0} | {} | {verdict} |",
        held / 1024.0,
        signed_figures(&small),
        signed_figures(&large),
        ingest
            .peak_rss_bytes()
            .map_or_else(|| "?".to_owned(), |b| format!("{:.0}", mib(b))),
    );
}

/// `accepted / sent, p50 s, max s`, and any other statuses.
fn signed_figures(signed: &[Signed]) -> String {
    let accepted = signed.iter().filter(|s| s.status == 202).count();
    let latencies = Latencies::new(signed.iter().map(|s| s.latency).collect());
    let mut others: Vec<u16> = signed
        .iter()
        .map(|s| s.status)
        .filter(|&s| s != 202)
        .collect();
    others.sort_unstable();
    let others = if others.is_empty() {
        String::new()
    } else {
        format!(" (others: {others:?})")
    };
    format!(
        "{accepted} / {}, {:.2} s, {:.2} s{others}",
        signed.len(),
        latencies.percentile_ms(50.0) / 1000.0,
        latencies.percentile_ms(100.0) / 1000.0,
    )
}
