//! Benchmark of the whole pipeline under a burst: keep-alive clients send webhooks to ingest
//! at a target rate well above what the worker drains, then stop, and the backlog drains
//! into PostgreSQL under the worker's concurrency and connection limits.
//!
//! Run it with `scripts/bench.sh pipeline [--burst-rate 2500] [--burst-seconds 10]
//! [--quiet-seconds 60] [--concurrency 4] [--max-in-flight 800] [--connections 4] [--set NAME=VALUE] [--clients 64]` (which starts
//! the local stack and builds in release mode). It starts ingest and a worker
//! (`WORKER_CONCURRENCY`, `DATABASE_MAX_CONNECTIONS`) on a fresh queue and database, sends
//! `burst-rate` webhooks/s for `burst-seconds`, then nothing until every accepted webhook is
//! stored or `quiet-seconds` have passed. Every second it records accepted/s (2xx),
//! stored/s (rows in `webhook_events`), queue depth (visible + in flight, from
//! GetQueueAttributes), lag (`webhook_worker_lag_seconds`), the worker's DB connections and
//! active statements (`pg_stat_activity`, sampled every 50 ms, the most per second) and its
//! in-flight messages (`webhook_worker_in_flight`, sampled every 100 ms, the most per
//! second). It writes `target/bench/pipeline.csv` and `target/bench/pipeline.png` and prints
//! a summary.

#![allow(
    clippy::print_stdout,
    reason = "the printed report is what a benchmark is for"
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use e2e_tests::plotting::{draw_legend, plot_error, register_fonts};
use e2e_tests::report::counter;
use e2e_tests::{Service, TestStack};
use plotters::prelude::*;

/// The `application_name` the worker's pool gives its connections.
const WORKER_APPLICATION_NAME: &str = "scalable-webhook-worker";
/// Seconds recorded after the backlog drained, so the plot shows the return to zero.
const TAIL_SECONDS: u64 = 2;

/// Load settings.
#[derive(Debug, Parser)]
struct Args {
    /// Target webhooks/s during the burst (about 4x what the worker drains with the default
    /// concurrency on a 2-core machine; see the README's Performance section).
    #[arg(long, default_value_t = 2500, value_parser = clap::value_parser!(u64).range(1..))]
    burst_rate: u64,
    /// Seconds the burst lasts.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    burst_seconds: u64,
    /// Seconds of quiet after the burst, at most: the run ends earlier once every accepted
    /// webhook is stored.
    #[arg(long, default_value_t = 60)]
    quiet_seconds: u64,
    /// WORKER_CONCURRENCY of the worker (most transactions in progress; at most the pool).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    concurrency: u32,
    /// WORKER_MAX_IN_FLIGHT of the worker (most messages held).
    #[arg(long, default_value_t = 800, value_parser = clap::value_parser!(u32).range(1..))]
    max_in_flight: u32,
    /// DATABASE_MAX_CONNECTIONS of the worker.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    connections: u32,
    /// Concurrent keep-alive clients of the load generator.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    clients: u64,
    /// Body size of each webhook (a JSON document padded to about this size), in bytes.
    #[arg(long, default_value_t = 512)]
    body_bytes: usize,
    /// Extra worker settings, NAME=VALUE (repeatable), e.g. --set MAX_MESSAGES_PER_SECOND=300.
    #[arg(long = "set", value_parser = e2e_tests::report::parse_setting)]
    settings: Vec<(String, String)>,
}

/// One second of the run.
#[derive(Debug, Clone)]
struct Row {
    second: f64,
    burst: bool,
    accepted_per_second: f64,
    rejected_per_second: f64,
    stored_per_second: f64,
    accepted_total: u64,
    stored_total: u64,
    queue_depth: u64,
    lag_seconds: f64,
    db_connections: i64,
    db_active: i64,
    in_flight: i64,
}

/// Maxima since the last per-second row, reset by each row.
#[derive(Debug, Default)]
struct Peaks {
    db_connections: AtomicI64,
    db_active: AtomicI64,
    in_flight: AtomicI64,
}

/// What the load generator counted.
#[derive(Debug, Default)]
struct Sent {
    accepted: AtomicU64,
    rejected: AtomicU64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let stack = TestStack::new("bench-pipeline").await;
    let (concurrency, connections) = (args.concurrency.to_string(), args.connections.to_string());
    let max_in_flight = args.max_in_flight.to_string();
    let mut settings = vec![
        ("WORKER_CONCURRENCY", concurrency.as_str()),
        ("WORKER_MAX_IN_FLIGHT", &max_in_flight),
        ("DATABASE_MAX_CONNECTIONS", &connections),
        ("QUEUE_METRICS_INTERVAL_SECONDS", "1"),
        ("RUST_LOG", "warn"),
    ];
    settings.extend(args.settings.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    let worker = stack.spawn_worker(&settings).await;
    let ingest = stack
        .spawn_ingest(&[("MAX_CONNECTIONS", "100000"), ("RUST_LOG", "warn")])
        .await;

    let stop = Arc::new(AtomicBool::new(false));
    let peaks = Arc::new(Peaks::default());
    let samplers = [
        tokio::spawn(sample_database(
            stack.db.clone(),
            Arc::clone(&peaks),
            Arc::clone(&stop),
        )),
        tokio::spawn(sample_in_flight(
            worker.ops_url("/metrics"),
            Arc::clone(&peaks),
            Arc::clone(&stop),
        )),
    ];

    let sent = Arc::new(Sent::default());
    let started = Instant::now();
    let load = tokio::spawn(generate_load(
        ingest.url("/webhooks/bench"),
        args.burst_rate,
        args.burst_seconds,
        args.clients,
        args.body_bytes,
        Arc::clone(&sent),
    ));

    let rows = record(&stack, &worker, &args, started, &sent, &peaks, load).await?;
    stop.store(true, Ordering::Relaxed);
    for sampler in samplers {
        sampler.await??;
    }
    worker.kill().await;
    ingest.kill().await;

    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("tests/ is inside the workspace")?
        .join("target/bench");
    std::fs::create_dir_all(&out_dir).context("creating target/bench")?;
    let csv_path = out_dir.join("pipeline.csv");
    let png_path = out_dir.join("pipeline.png");
    write_csv(&csv_path, &rows)?;
    plot(&png_path, &rows, &args)?;
    print!("{}", summary(&args, &rows, &sent, &csv_path, &png_path));
    stack.cleanup().await;
    Ok(())
}

/// Sends `rate` webhooks/s for `seconds` from `clients` keep-alive clients: webhook `k` is
/// due `k / rate` seconds after the start, and a client behind schedule sends at once.
async fn generate_load(
    url: String,
    rate: u64,
    seconds: u64,
    clients: u64,
    body_bytes: usize,
    sent: Arc<Sent>,
) {
    let total = rate * seconds;
    let next = Arc::new(AtomicU64::new(0));
    let started = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (url, next, sent) = (url.clone(), Arc::clone(&next), Arc::clone(&sent));
        tasks.spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .expect("client");
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= total {
                    return;
                }
                tokio::time::sleep_until(started + Duration::from_secs_f64(k as f64 / rate as f64))
                    .await;
                let body = format!(
                    r#"{{"n":{k},"pad":"{}"}}"#,
                    "x".repeat(body_bytes.saturating_sub(24))
                );
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                let counter = if response.is_ok_and(|r| r.status().is_success()) {
                    &sent.accepted
                } else {
                    &sent.rejected
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    tasks.join_all().await;
}

/// Records one row per second until the load is over and every accepted webhook is stored
/// (plus a short tail), or the quiet period ends.
async fn record(
    stack: &TestStack,
    worker: &Service,
    args: &Args,
    started: Instant,
    sent: &Sent,
    peaks: &Peaks,
    mut load: tokio::task::JoinHandle<()>,
) -> anyhow::Result<Vec<Row>> {
    let metrics_client = reqwest::Client::new();
    let metrics_url = worker.ops_url("/metrics");
    let mut rows: Vec<Row> = Vec::new();
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let (mut last_at, mut last_accepted, mut last_rejected, mut last_stored) =
        (started, 0u64, 0u64, 0u64);
    let mut load_done_at: Option<Instant> = None;
    let mut drained_at: Option<Instant> = None;
    loop {
        ticks.tick().await;
        if load_done_at.is_none() && load.is_finished() {
            (&mut load).await.context("the load generator")?;
            load_done_at = Some(Instant::now());
        }
        let now = Instant::now();
        let accepted = sent.accepted.load(Ordering::Relaxed);
        let rejected = sent.rejected.load(Ordering::Relaxed);
        let stored = u64::try_from(stack.stored_count().await).unwrap_or_default();
        let queue_depth = stack.messages_in(&stack.queue_url).await;
        let lag_seconds = match metrics_client.get(&metrics_url).send().await {
            Ok(response) => counter(
                &response.text().await.unwrap_or_default(),
                "webhook_worker_lag_seconds",
                &[],
            ),
            Err(_) => f64::NAN,
        };
        let dt = now.duration_since(last_at).as_secs_f64().max(1e-3);
        rows.push(Row {
            second: now.duration_since(started).as_secs_f64(),
            burst: load_done_at.is_none(),
            accepted_per_second: (accepted - last_accepted) as f64 / dt,
            rejected_per_second: (rejected - last_rejected) as f64 / dt,
            stored_per_second: stored.saturating_sub(last_stored) as f64 / dt,
            accepted_total: accepted,
            stored_total: stored,
            queue_depth,
            lag_seconds,
            db_connections: peaks.db_connections.swap(0, Ordering::Relaxed),
            db_active: peaks.db_active.swap(0, Ordering::Relaxed),
            in_flight: peaks.in_flight.swap(0, Ordering::Relaxed),
        });
        (last_at, last_accepted, last_rejected, last_stored) = (now, accepted, rejected, stored);

        let Some(done) = load_done_at else { continue };
        if drained_at.is_none() && stored >= accepted && queue_depth == 0 {
            drained_at = Some(now);
        }
        if let Some(drained) = drained_at
            && now.duration_since(drained) >= Duration::from_secs(TAIL_SECONDS)
        {
            break;
        }
        if now.duration_since(done) >= Duration::from_secs(args.quiet_seconds) {
            break;
        }
    }
    Ok(rows)
}

/// Every 50 ms, the worker's connections to the test database and how many of them run a
/// statement, kept as the most since the last row.
async fn sample_database(
    db: sqlx::PgPool,
    peaks: Arc<Peaks>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let mut ticks = tokio::time::interval(Duration::from_millis(50));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        let (connections, active): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE state = 'active') FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = $1",
        )
        .bind(WORKER_APPLICATION_NAME)
        .fetch_one(&db)
        .await
        .context("sampling pg_stat_activity")?;
        peaks
            .db_connections
            .fetch_max(connections, Ordering::Relaxed);
        peaks.db_active.fetch_max(active, Ordering::Relaxed);
    }
    Ok(())
}

/// Every 100 ms, the worker's `webhook_worker_in_flight`, kept as the most since the last row.
async fn sample_in_flight(
    metrics_url: String,
    peaks: Arc<Peaks>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let mut ticks = tokio::time::interval(Duration::from_millis(100));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        let Ok(response) = client.get(&metrics_url).send().await else {
            continue;
        };
        let text = response.text().await.unwrap_or_default();
        let in_flight = counter(&text, "webhook_worker_in_flight", &[]);
        peaks
            .in_flight
            .fetch_max(in_flight.round() as i64, Ordering::Relaxed);
    }
    Ok(())
}

fn write_csv(path: &PathBuf, rows: &[Row]) -> anyhow::Result<()> {
    let mut csv = String::from(
        "second,phase,accepted_per_s,rejected_per_s,stored_per_s,accepted_total,stored_total,\
         queue_depth,lag_seconds,db_connections_max,db_active_max,in_flight_max\n",
    );
    for row in rows {
        csv += &format!(
            "{:.2},{},{:.0},{:.0},{:.0},{},{},{},{:.1},{},{},{}\n",
            row.second,
            if row.burst { "burst" } else { "quiet" },
            row.accepted_per_second,
            row.rejected_per_second,
            row.stored_per_second,
            row.accepted_total,
            row.stored_total,
            row.queue_depth,
            row.lag_seconds,
            row.db_connections,
            row.db_active,
            row.in_flight,
        );
    }
    std::fs::write(path, csv).with_context(|| format!("writing {}", path.display()))
}

/// Two panels over time: queue depth and lag on top, accepted/s and stored/s below.
fn plot(path: &Path, rows: &[Row], args: &Args) -> anyhow::Result<()> {
    register_fonts()?;
    let root = BitMapBackend::new(path, (1200, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let (top, bottom) = root.split_vertically(450);
    let last = rows.last().map_or(1.0, |row| row.second).ceil();
    let burst_end = rows
        .iter()
        .rfind(|row| row.burst)
        .map_or(0.0, |row| row.second);

    let max_depth = rows.iter().map(|row| row.queue_depth).max().unwrap_or(0) as f64;
    let max_lag = rows
        .iter()
        .map(|row| row.lag_seconds)
        .filter(|lag| lag.is_finite())
        .fold(0.0, f64::max);
    let mut chart = ChartBuilder::on(&top)
        .caption(
            format!(
                "burst of {}/s for {} s, WORKER_CONCURRENCY={}, DATABASE_MAX_CONNECTIONS={}",
                args.burst_rate, args.burst_seconds, args.concurrency, args.connections
            ),
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .right_y_label_area_size(60)
        .build_cartesian_2d(0.0..last, 0.0..(max_depth * 1.1).max(1.0))
        .map_err(plot_error)?
        .set_secondary_coord(0.0..last, 0.0..(max_lag * 1.1).max(1.0));
    chart
        .configure_mesh()
        .x_desc("seconds since the start of the burst")
        .y_desc("queue depth (messages)")
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(plot_error)?;
    chart
        .configure_secondary_axes()
        .y_desc("lag (s)")
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(plot_error)?;
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(burst_end, 0.0), (burst_end, max_depth * 1.1)],
            BLACK.mix(0.3),
        )))
        .map_err(plot_error)?;
    chart
        .draw_series(LineSeries::new(
            rows.iter().map(|row| (row.second, row.queue_depth as f64)),
            BLUE.stroke_width(2),
        ))
        .map_err(plot_error)?
        .label("queue depth (left)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    chart
        .draw_secondary_series(LineSeries::new(
            rows.iter()
                .filter(|row| row.lag_seconds.is_finite())
                .map(|row| (row.second, row.lag_seconds)),
            RED.stroke_width(2),
        ))
        .map_err(plot_error)?
        .label("lag (right)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    draw_legend(&mut chart, 15)?;

    let max_rate = rows
        .iter()
        .map(|row| row.accepted_per_second.max(row.stored_per_second))
        .fold(0.0, f64::max);
    let mut rates = ChartBuilder::on(&bottom)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .right_y_label_area_size(60)
        .build_cartesian_2d(0.0..last, 0.0..(max_rate * 1.1).max(1.0))
        .map_err(plot_error)?;
    rates
        .configure_mesh()
        .x_desc("seconds since the start of the burst")
        .y_desc("webhooks/s")
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(plot_error)?;
    rates
        .draw_series(LineSeries::new(
            rows.iter().map(|row| (row.second, row.accepted_per_second)),
            GREEN.stroke_width(2),
        ))
        .map_err(plot_error)?
        .label("accepted/s (2xx from ingest)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN.stroke_width(2)));
    rates
        .draw_series(LineSeries::new(
            rows.iter().map(|row| (row.second, row.stored_per_second)),
            MAGENTA.stroke_width(2),
        ))
        .map_err(plot_error)?
        .label("stored/s (rows in PostgreSQL)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], MAGENTA.stroke_width(2)));
    draw_legend(&mut rates, 15)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

fn summary(args: &Args, rows: &[Row], sent: &Sent, csv: &Path, png: &Path) -> String {
    let accepted = sent.accepted.load(Ordering::Relaxed);
    let rejected = sent.rejected.load(Ordering::Relaxed);
    let stored = rows.last().map_or(0, |row| row.stored_total);
    let burst_rows: Vec<&Row> = rows.iter().filter(|row| row.burst).collect();
    let burst_seconds = burst_rows.last().map_or(0.0, |row| row.second);
    let peak = |value: fn(&Row) -> f64| rows.iter().map(value).fold(0.0, f64::max);
    let peak_depth = peak(|row| row.queue_depth as f64);
    let peak_lag = peak(|row| {
        if row.lag_seconds.is_finite() {
            row.lag_seconds
        } else {
            0.0
        }
    });
    let max_connections = rows.iter().map(|row| row.db_connections).max().unwrap_or(0);
    let max_active = rows.iter().map(|row| row.db_active).max().unwrap_or(0);
    let max_in_flight = rows.iter().map(|row| row.in_flight).max().unwrap_or(0);
    let drained = rows
        .iter()
        .find(|row| !row.burst && row.stored_total >= accepted && row.queue_depth == 0);
    // A large backlog: more waiting than the worker's window holds.
    let large = u64::from(args.max_in_flight);
    let backlog_rows: Vec<&Row> = rows.iter().filter(|row| row.queue_depth > large).collect();
    let backlog_connections = backlog_rows
        .iter()
        .map(|row| row.db_connections)
        .max()
        .unwrap_or(0);
    let backlog_active = backlog_rows
        .iter()
        .map(|row| row.db_active)
        .max()
        .unwrap_or(0);
    let bound = i64::from(args.connections);
    let verdict = |ok: bool| {
        if ok {
            "within the bound"
        } else {
            "ABOVE the bound"
        }
    };

    let mut out = String::new();
    out += &format!(
        "pipeline benchmark: burst of {}/s for {} s from {} keep-alive clients ({} B bodies), then up to {} s quiet; WORKER_CONCURRENCY={}, DATABASE_MAX_CONNECTIONS={}; LocalStack at {}\n\n",
        args.burst_rate,
        args.burst_seconds,
        args.clients,
        args.body_bytes,
        args.quiet_seconds,
        args.concurrency,
        args.connections,
        sqs_host(),
    );
    out += &format!(
        "accepted: {accepted} (2xx) in {burst_seconds:.1} s = {:.0}/s against a target of {}/s; not accepted: {rejected}\n",
        accepted as f64 / burst_seconds.max(1e-3),
        args.burst_rate
    );
    out += &format!(
        "stored: {stored} ({})\n",
        if stored == accepted {
            "equal to accepted".to_owned()
        } else {
            format!(
                "NOT equal to accepted: {} missing",
                accepted as i64 - stored as i64
            )
        }
    );
    out += &format!("peak queue depth: {peak_depth:.0} messages; peak lag: {peak_lag:.1} s\n");
    out += &match drained {
        Some(row) => format!(
            "drain time: {:.1} s after the burst ended ({:.1} s from the start); worker average {:.0} stored/s over the run\n",
            row.second - burst_seconds,
            row.second,
            stored as f64 / row.second.max(1e-3)
        ),
        None => format!(
            "drain time: NOT drained within {} s of quiet\n",
            args.quiet_seconds
        ),
    };
    out += &format!(
        "max messages held: {max_in_flight} of WORKER_MAX_IN_FLIGHT={} ({})\n",
        args.max_in_flight,
        verdict(max_in_flight <= i64::from(args.max_in_flight))
    );
    out += &format!(
        "max DB connections: {max_connections} of DATABASE_MAX_CONNECTIONS={} ({}); max active statements: {max_active}\n",
        args.connections,
        verdict(max_connections <= bound)
    );
    out += &format!(
        "DB protection: over the {} s with more than {large} messages waiting (peak {peak_depth:.0}), the worker held at most {backlog_connections} connections and ran at most {backlog_active} statements at once, against DATABASE_MAX_CONNECTIONS={}: {}\n",
        backlog_rows.len(),
        args.connections,
        if backlog_rows.is_empty() {
            "no large backlog, claim not exercised".to_owned()
        } else if backlog_connections <= bound && backlog_active <= bound {
            "never above the bound".to_owned()
        } else {
            "ABOVE the bound".to_owned()
        }
    );
    out += &format!(
        "\nper-second results: {}\nplot: {}\n",
        csv.display(),
        png.display()
    );
    out
}

fn sqs_host() -> String {
    std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "http://127.0.0.1:4566".to_owned())
}
