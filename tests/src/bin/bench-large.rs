//! Benchmark of large webhooks through S3 (issue 12): concurrent uploads of signed GitHub
//! webhooks of many MiB to an ingest with `LARGE_PAYLOAD_BUCKET` set, stored by a worker, all
//! against LocalStack's S3 and SQS and the local PostgreSQL.
//!
//! `scripts/bench.sh large [--clients 16] [--mib 25] [--per-client 2] [--set NAME=VALUE]`
//! Prints the upload throughput (MiB/s and webhooks/s, answers by status, p50/p99 time to the
//! 202), the time until the worker has stored every row, ingest's peak RSS over its idle RSS
//! (target: at most 64 MiB), the worker's peak RSS, S3 requests per webhook (ingest's and the
//! worker's, from `webhook_s3_requests_total`), the objects left in the bucket, and the CPU
//! seconds of ingest, the worker and LocalStack.

#![allow(
    clippy::print_stdout,
    reason = "the printed report is what a benchmark is for"
)]

use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use e2e_tests::TestStack;
use e2e_tests::report::{LOCALSTACK_CMDLINE, Latencies, counter, cpu_seconds, cpu_seconds_of, mib};
use hmac::{KeyInit as _, Mac as _};
use webhook_shared::large_payload::{S3Timeouts, s3_client};

/// Load settings.
#[derive(Debug, Parser)]
struct Args {
    /// Concurrent uploads.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Body size of each webhook, in MiB.
    #[arg(long, default_value_t = 25)]
    mib: usize,
    /// Webhooks each client sends, one after the other.
    #[arg(long, default_value_t = 2)]
    per_client: usize,
    /// An ingest setting, as NAME=VALUE (repeatable), e.g.
    /// `--set LARGE_PAYLOAD_BUFFER_BYTES=20971520`.
    #[arg(long = "set", value_parser = e2e_tests::report::parse_setting)]
    settings: Vec<(String, String)>,
}

/// The GitHub secret of the benchmark's source.
const SECRET: &str = "bench-large-secret";
/// Most ingest's RSS may grow over its idle RSS under the load (issue 12).
const RSS_TARGET_MIB: f64 = 64.0;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let stack = TestStack::new("bench-large").await;
    let s3 = s3_client(S3Timeouts {
        attempt: Duration::from_secs(60),
        max_attempts: 3,
    })
    .await;
    let bucket = format!(
        "bench-large-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .context("creating the benchmark's bucket")?;
    let sources = std::env::temp_dir().join(format!("bench-large-{bucket}.toml"));
    std::fs::write(
        &sources,
        "[sources.github]\nscheme = \"github\"\nsecret_env = [\"GITHUB_SECRET\"]\n",
    )?;
    let sources_path = sources.to_str().context("utf-8 temp path")?;
    let common = [
        ("LARGE_PAYLOAD_BUCKET", bucket.as_str()),
        ("RUST_LOG", "warn"),
    ];
    let mut ingest_settings = vec![
        common[0],
        common[1],
        ("SOURCES_FILE", sources_path),
        ("GITHUB_SECRET", SECRET),
    ];
    ingest_settings.extend(args.settings.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    let ingest = stack.spawn_ingest(&ingest_settings).await;
    let worker = stack.spawn_worker(&common).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ingest_idle = current_rss(ingest.pid()).unwrap_or_default();

    let body = webhook_body(args.mib << 20);
    let signature = github_signature(&body);
    let total = args.clients * args.per_client;
    println!(
        "large-payload benchmark: {} clients x {} webhooks of {} MiB (GitHub-signed), ingest settings {:?}, bucket {bucket}, LocalStack at {}\n",
        args.clients, args.per_client, args.mib, args.settings, stack.queue_url
    );
    let cpu_before = cpu_split(&ingest, &worker);
    let started = Instant::now();
    let url = ingest.url("/webhooks/github");
    let client = reqwest::Client::new();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..args.clients {
        let (client, url, body, signature) =
            (client.clone(), url.clone(), body.clone(), signature.clone());
        let per_client = args.per_client;
        tasks.spawn(async move {
            let mut results = Vec::new();
            for n in 0..per_client {
                let sent = Instant::now();
                let status = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-github-event", "push")
                    .header(
                        "x-github-delivery",
                        format!("bench-{c}-{n}-{}", uuid::Uuid::now_v7()),
                    )
                    .header("x-hub-signature-256", &signature)
                    .body(body.clone())
                    .send()
                    .await
                    .map_or(0, |response| response.status().as_u16());
                results.push((status, sent.elapsed()));
            }
            results
        });
    }
    let results: Vec<(u16, Duration)> = tasks.join_all().await.into_iter().flatten().collect();
    let upload_seconds = started.elapsed().as_secs_f64();
    let accepted = results.iter().filter(|(status, _)| *status == 202).count();
    let mut statuses: Vec<u16> = results.iter().map(|(status, _)| *status).collect();
    statuses.sort_unstable();
    statuses.dedup();
    let by_status: Vec<String> = statuses
        .iter()
        .map(|s| format!("{s}: {}", results.iter().filter(|(r, _)| r == s).count()))
        .collect();
    let latencies = Latencies::new(
        results
            .iter()
            .filter(|(status, _)| *status == 202)
            .map(|(_, latency)| *latency)
            .collect(),
    );
    stack
        .wait_for_rows(accepted as i64, Duration::from_secs(600))
        .await;
    let stored_seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_split(&ingest, &worker)
        .zip(cpu_before)
        .map(|(after, before)| [0, 1, 2].map(|i| after[i] - before[i]));
    let ingest_metrics = ingest.metrics().await;
    let worker_metrics = worker.metrics().await;
    let s3_requests = |metrics: &str| counter(metrics, "webhook_s3_requests_total", &[]);
    let objects_left = s3
        .list_objects_v2()
        .bucket(&bucket)
        .send()
        .await
        .map_or(0, |listing| listing.key_count().unwrap_or_default());
    let ingest_peak = ingest.peak_rss_bytes().unwrap_or_default();
    let over_idle = mib(ingest_peak.saturating_sub(ingest_idle));

    let megabytes = (accepted * args.mib) as f64;
    println!("| figure | value |\n|---|---|");
    println!("| answers | {} ({}) |", results.len(), by_status.join(", "));
    println!(
        "| upload throughput | {:.1} MiB/s, {:.2} webhooks/s ({accepted} in {upload_seconds:.1} s) |",
        megabytes / upload_seconds,
        accepted as f64 / upload_seconds
    );
    println!(
        "| time to 202, p50 / p99 | {:.0} / {:.0} ms |",
        latencies.percentile_ms(50.0),
        latencies.percentile_ms(99.0)
    );
    println!(
        "| all {accepted} stored by the worker after | {stored_seconds:.1} s ({:.1} MiB/s end to end) |",
        megabytes / stored_seconds
    );
    println!(
        "| ingest RSS: idle / peak / peak over idle | {:.1} / {:.1} / **{over_idle:.1} MiB** |",
        mib(ingest_idle),
        mib(ingest_peak)
    );
    println!(
        "| worker peak RSS | {:.1} MiB |",
        mib(worker.peak_rss_bytes().unwrap_or_default())
    );
    println!(
        "| S3 requests per webhook: ingest / worker | {:.2} / {:.2} |",
        s3_requests(&ingest_metrics) / (accepted.max(1) as f64),
        s3_requests(&worker_metrics) / (accepted.max(1) as f64)
    );
    println!("| objects left in the bucket | {objects_left} |");
    if let Some([ingest_cpu, worker_cpu, localstack_cpu]) = cpu {
        println!(
            "| CPU s: ingest / worker / LocalStack | {ingest_cpu:.1} / {worker_cpu:.1} / {localstack_cpu:.1} |"
        );
    }
    let verdict = if over_idle <= RSS_TARGET_MIB && accepted == total {
        "met"
    } else {
        "not met"
    };
    println!(
        "\n| target | measured | |\n|---|---|---|\n| ingest ≤ {RSS_TARGET_MIB:.0} MiB over idle RSS, every webhook accepted | {over_idle:.1} MiB, {accepted}/{total} | {verdict} |"
    );

    drop(worker);
    drop(ingest);
    empty_bucket(&s3, &bucket).await;
    std::fs::remove_file(&sources).ok();
    stack.cleanup().await;
    Ok(())
}

/// A JSON body of exactly `bytes` bytes.
fn webhook_body(bytes: usize) -> Bytes {
    let head = br#"{"ref":"refs/heads/main","padding":""#;
    let tail = br#""}"#;
    let mut body = Vec::with_capacity(bytes);
    body.extend_from_slice(head);
    body.resize(bytes - tail.len(), b'x');
    body.extend_from_slice(tail);
    Bytes::from(body)
}

fn github_signature(body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The resident set size (VmRSS) of `pid` now, in bytes.
fn current_rss(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU seconds so far of ingest, the worker and LocalStack.
fn cpu_split(ingest: &e2e_tests::Service, worker: &e2e_tests::Service) -> Option<[f64; 3]> {
    Some([
        cpu_seconds(ingest.pid()?)?,
        cpu_seconds(worker.pid()?)?,
        cpu_seconds_of(LOCALSTACK_CMDLINE),
    ])
}

/// Deletes every object (and incomplete upload) of `bucket`, then the bucket.
async fn empty_bucket(s3: &aws_sdk_s3::Client, bucket: &str) {
    if let Ok(listing) = s3.list_objects_v2().bucket(bucket).send().await {
        for object in listing.contents() {
            if let Some(key) = object.key() {
                s3.delete_object().bucket(bucket).key(key).send().await.ok();
            }
        }
    }
    if let Ok(uploads) = s3.list_multipart_uploads().bucket(bucket).send().await {
        for upload in uploads.uploads() {
            if let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) {
                s3.abort_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(id)
                    .send()
                    .await
                    .ok();
            }
        }
    }
    s3.delete_bucket().bucket(bucket).send().await.ok();
}
