//! Benchmark of one webhook's latency when the system is not saturated: how long from the
//! provider's request to the 202, and to the committed row, against the floor of the same
//! services used the plainest way (see `latency_floor.rs`).
//!
//! Run it with `scripts/bench.sh latency [--levels 10,50,80] [--seconds 30]
//! [--capacity-seconds 15] [--set NAME=VALUE] [--ingest-set NAME=VALUE]`. On a fresh queue and
//! database it starts ingest, a worker and the floor's consumers, then:
//! 1. **capacity**: `--clients` keep-alive clients send as fast as ingest answers for
//!    `--capacity-seconds` while the worker drains; the capacity is the rows committed per
//!    second over the last 10 s of that (the drain under load, the slower side here);
//! 2. for each level (a percentage of that capacity), an open-loop phase through the pipeline
//!    (HTTP POST to ingest) and one through the floor (SDK `SendMessage`), at the same rate
//!    for `--seconds`, their order alternating between levels, each drained before the next.
//!
//! Every latency is measured from the request's due time (see `latency.rs`): time to the
//! answer (202 or `SendMessage`'s), and request to commit (a trigger's NOTIFY, delivered at
//! commit). It prints p50 / p99 / p99.9 of each, the ratios to the floor and the targets, and
//! compares `webhook_end_to_end_seconds` with the same span measured from outside. A probe
//! (`GetQueueAttributes` every 100 ms) marks the seconds in which LocalStack stalls, and the
//! figures are given with and without the requests those stalls caught. It writes
//! `target/bench/latency.csv` and `target/bench/latency.png` (latency over time with the
//! queue depths).

#![allow(
    clippy::print_stdout,
    reason = "the printed report is what a benchmark is for"
)]

mod figures;
mod plot;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use e2e_tests::latency::{self, Commits, Request};
use e2e_tests::latency_floor::Floor;
use e2e_tests::report::{LOCALSTACK_CMDLINE, cpu_seconds, cpu_seconds_of, histogram_buckets};
use e2e_tests::{Service, TestStack};
use tokio::time::Instant;

use crate::figures::{Cpu, Depth, Kind, Load, Phase, Probes};

/// The worker's end-to-end histogram.
const END_TO_END: &str = "webhook_end_to_end_seconds";
/// How often LocalStack is probed.
const PROBE_PERIOD: Duration = Duration::from_millis(100);
/// Longest wait for a phase's webhooks to be committed and its queue to empty.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(180);
/// Seconds at the start of the capacity phase left out of the capacity (the worker warming
/// up to the backlog).
const CAPACITY_WARM_UP: Duration = Duration::from_secs(5);

/// Load settings.
#[derive(Debug, Parser)]
struct Args {
    /// Loads, in percent of the capacity measured in the same run.
    #[arg(long, value_delimiter = ',', default_value = "10,50,80")]
    levels: Vec<u32>,
    /// Seconds of each open-loop phase.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
    /// Seconds of the capacity phase (the last 10 s count).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(11..))]
    capacity_seconds: u64,
    /// Keep-alive clients of the capacity phase.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    clients: u64,
    /// Most requests of an open-loop phase waiting at once; one due beyond it is dropped.
    #[arg(long, default_value_t = 5000)]
    max_in_flight: usize,
    /// Body size of each webhook (a JSON document padded to about this size), in bytes.
    #[arg(long, default_value_t = 256)]
    body_bytes: usize,
    /// Receive loops of the floor's consumer (the worker's default WORKER_CONCURRENCY).
    #[arg(long, default_value_t = 4)]
    floor_consumers: usize,
    /// Connections of the floor's consumer (the worker's default DATABASE_MAX_CONNECTIONS).
    #[arg(long, default_value_t = 4)]
    floor_connections: u32,
    /// Extra worker settings, NAME=VALUE (repeatable).
    #[arg(long = "set", value_parser = e2e_tests::report::parse_setting)]
    settings: Vec<(String, String)>,
    /// Extra ingest settings, NAME=VALUE (repeatable), e.g. --ingest-set BATCH_LINGER_MS=5.
    #[arg(long = "ingest-set", value_parser = e2e_tests::report::parse_setting)]
    ingest_settings: Vec<(String, String)>,
}

/// What every phase needs.
struct Run {
    args: Args,
    stack: TestStack,
    worker: Service,
    ingest: Service,
    floor: Floor,
    commits: Commits,
    http: reqwest::Client,
    started: Instant,
    /// Rows (of both tables) the drains wait for.
    expected: AtomicU64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let stack = TestStack::new("bench-latency").await;
    latency::install_commit_triggers(&stack.db).await?;
    let commits = Commits::listen(&stack.database_url).await?;
    let mut worker_settings = vec![
        ("QUEUE_METRICS_INTERVAL_SECONDS", "1"),
        ("RUST_LOG", "warn"),
    ];
    worker_settings.extend(args.settings.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    let worker = stack.spawn_worker(&worker_settings).await;
    let mut ingest_settings = vec![("MAX_CONNECTIONS", "100000"), ("RUST_LOG", "warn")];
    ingest_settings.extend(
        args.ingest_settings
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str())),
    );
    let ingest = stack.spawn_ingest(&ingest_settings).await;
    let floor = Floor::start(&stack, args.floor_consumers, args.floor_connections).await?;
    let run = Arc::new(Run {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()?,
        started: Instant::now(),
        expected: AtomicU64::new(0),
        args,
        stack,
        worker,
        ingest,
        floor,
        commits,
    });
    let stop_depths = Arc::new(AtomicBool::new(false));
    let depths = tokio::spawn(sample_depths(Arc::clone(&run), Arc::clone(&stop_depths)));
    let probes = Probes::default();
    let probing = tokio::spawn(probe_sqs(
        Arc::clone(&run),
        probes.clone(),
        Arc::clone(&stop_depths),
    ));

    let capacity = measure_capacity(&run).await?;
    let mut phases = Vec::new();
    for (i, &level) in run.args.levels.iter().enumerate() {
        let rate = capacity * f64::from(level) / 100.0;
        let order = if i % 2 == 0 {
            [Kind::Pipeline, Kind::Floor]
        } else {
            [Kind::Floor, Kind::Pipeline]
        };
        for kind in order {
            phases.push(run_phase(&run, level, kind, rate, &probes).await?);
        }
    }
    stop_depths.store(true, Ordering::Relaxed);
    let depths = depths.await??;
    probing.await?;

    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("tests/ is inside the workspace")?
        .join("target/bench");
    std::fs::create_dir_all(&out_dir).context("creating target/bench")?;
    let (csv, png) = (out_dir.join("latency.csv"), out_dir.join("latency.png"));
    figures::write_csv(&csv, &phases, &depths)?;
    plot::draw(&png, &phases, &depths, &probes.stalled())?;
    print!(
        "{}",
        figures::report(&run.args.levels, capacity, &phases, &csv, &png)
    );
    let Ok(run) = Arc::try_unwrap(run) else {
        anyhow::bail!("the depth sampler still holds the run");
    };
    run.floor.stop().await;
    run.worker.kill().await;
    run.ingest.kill().await;
    run.stack.cleanup().await;
    Ok(())
}

/// One POST of the tag `tag` to ingest; whether it was answered 2xx.
fn post(run: &Run, tag: &str) -> impl Future<Output = bool> + Send + 'static + use<> {
    let pad = "x".repeat(run.args.body_bytes.saturating_sub(30));
    let request = run
        .http
        .post(run.ingest.url("/webhooks/bench"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"tag":"{tag}","pad":"{pad}"}}"#));
    async move {
        request
            .send()
            .await
            .is_ok_and(|response| response.status().is_success())
    }
}

/// Closed loop for `capacity_seconds`; returns the rows committed per second after the
/// warm-up, then waits until the backlog is stored.
async fn measure_capacity(run: &Arc<Run>) -> anyhow::Result<f64> {
    let until = Instant::now() + Duration::from_secs(run.args.capacity_seconds);
    let sender = Arc::clone(run);
    let load = tokio::spawn(latency::closed_loop(
        run.args.clients,
        move |_| Instant::now() >= until,
        move |k| post(&sender, &latency::tag("capacity", k)),
    ));
    tokio::time::sleep(CAPACITY_WARM_UP).await;
    let (from, committed_from) = (Instant::now(), run.commits.len());
    let accepted = load.await.context("the capacity load")?;
    let capacity =
        (run.commits.len() - committed_from) as f64 / from.elapsed().as_secs_f64().max(1e-3);
    run.expected.fetch_add(accepted, Ordering::Relaxed);
    drain(run, &run.stack.queue_url).await?;
    println!(
        "capacity: {capacity:.0} rows/s committed while {} clients sent for {} s ({} accepted)",
        run.args.clients, run.args.capacity_seconds, accepted
    );
    anyhow::ensure!(capacity >= 1.0, "no capacity measured");
    Ok(capacity)
}

/// One open-loop phase at `rate`, drained; its figures.
async fn run_phase(
    run: &Arc<Run>,
    level: u32,
    kind: Kind,
    rate: f64,
    probes: &Probes,
) -> anyhow::Result<Phase> {
    let name = format!("{level}{}", kind.letter());
    let before = histogram_buckets(&run.worker.metrics().await, END_TO_END);
    let seconds = Duration::from_secs(run.args.seconds);
    let cpu_before = Cpu::read(run);
    let requests: Vec<Request> = match kind {
        Kind::Pipeline => {
            latency::open_loop(rate, seconds, run.args.max_in_flight, |k| {
                post(run, &latency::tag(&name, k))
            })
            .await
        }
        Kind::Floor => {
            latency::open_loop(rate, seconds, run.args.max_in_flight, |k| {
                run.floor.send(&latency::tag(&name, k))
            })
            .await
        }
    };
    let cpu = Cpu::read(run).cores_since(&cpu_before);
    let accepted = requests.iter().filter(|r| r.accepted()).count() as u64;
    run.expected.fetch_add(accepted, Ordering::Relaxed);
    let queue = match kind {
        Kind::Pipeline => &run.stack.queue_url,
        Kind::Floor => &run.floor.queue_url,
    };
    let backlog = run.stack.messages_in(queue).await;
    drain(run, queue).await?;
    let after = histogram_buckets(&run.worker.metrics().await, END_TO_END);
    let received = match kind {
        Kind::Pipeline => figures::received_at(&run.stack.db, &name).await?,
        Kind::Floor => Default::default(),
    };
    Ok(Phase::new(
        name,
        level,
        kind,
        rate,
        run.started,
        requests,
        &run.commits,
        received,
        (before, after),
        Load { backlog, cpu },
        &probes.stalled(),
    ))
}

impl Cpu {
    /// CPU seconds used so far by each process of the run.
    fn read(run: &Run) -> Self {
        let of_pid = |pid: Option<u32>| pid.and_then(cpu_seconds).unwrap_or_default();
        Self {
            at: Instant::now(),
            localstack: cpu_seconds_of(LOCALSTACK_CMDLINE),
            postgres: cpu_seconds_of("postgres"),
            ingest: of_pid(run.ingest.pid()),
            worker: of_pid(run.worker.pid()),
            bench: of_pid(Some(std::process::id())),
        }
    }
}

/// Waits until every accepted request so far is committed and `queue` is empty.
async fn drain(run: &Run, queue: &str) -> anyhow::Result<()> {
    let until = Instant::now() + DRAIN_TIMEOUT;
    loop {
        let expected = run.expected.load(Ordering::Relaxed);
        if run.commits.len() as u64 >= expected && run.stack.messages_in(queue).await == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < until,
            "not drained within {DRAIN_TIMEOUT:?}: {} of {expected} committed",
            run.commits.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every [`PROBE_PERIOD`], one `GetQueueAttributes` on the dead-letter queue, timed: when
/// LocalStack stalls (it does, for half a second or more about every 100 s here), every path
/// through it stalls alike, and the probe shows when.
async fn probe_sqs(run: Arc<Run>, probes: Probes, stop: Arc<AtomicBool>) {
    let mut ticks = tokio::time::interval(PROBE_PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        let sent = Instant::now();
        let _ = run
            .stack
            .sqs
            .get_queue_attributes()
            .queue_url(&run.stack.dlq_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await;
        probes.record((sent - run.started).as_secs_f64(), sent.elapsed());
    }
}

/// Every second, the depth (visible plus in flight) of the pipeline's queue and the floor's.
async fn sample_depths(run: Arc<Run>, stop: Arc<AtomicBool>) -> anyhow::Result<Vec<Depth>> {
    let mut depths = Vec::new();
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        depths.push(Depth {
            second: run.started.elapsed().as_secs_f64(),
            pipeline: run.stack.messages_in(&run.stack.queue_url).await,
            floor: run.stack.messages_in(&run.floor.queue_url).await,
        });
    }
    Ok(depths)
}
