//! Benchmark of what the worker's draining costs the database's other users, and whether it
//! gives way when the database slows down.
//!
//! `scripts/bench.sh neighbour [--messages 50000] [--seconds 40] [--slow-from 10]
//! [--slow-until 25] [--clients 4] [--think-ms 5] [--hogs 6] [--insert-cpu 10000]
//! [--concurrency 16] [--calibrate-seconds 5] [--plot docs/neighbour.png] [--set NAME=VALUE]`
//!
//! First a calibration on a database of its own: the neighbour alone, then beside the hogs,
//! so the slowdown is measured without the worker. Then, once per mode (fixed
//! `WORKER_CONCURRENCY`, then `WORKER_ADAPTIVE_CONCURRENCY=true` with the same ceiling), on a
//! fresh queue and database with a backlog of `--messages` envelopes, for `--seconds`:
//! - the neighbour: `--clients` connections each running a single-row `UPDATE` of a
//!   1,000-row table (ids from a fixed-seed generator) then `--think-ms` of think time,
//!   each operation's start and latency recorded;
//! - the worker draining the backlog from t = 0 (pool and ceiling `--concurrency`), each
//!   stored event costing PostgreSQL `--insert-cpu` of CPU work (a trigger), so the
//!   database, not LocalStack, is what limits the worker and its concurrency matters;
//! - from `--slow-from` to `--slow-until`, `--hogs` extra connections running a CPU-bound
//!   query in a loop (cancelled at the end), so PostgreSQL gets slower for everyone;
//! - the worker's /metrics every 250 ms: stored messages, concurrency limit, writes in
//!   progress, the commit-time histogram; and PostgreSQL's CPU time.
//!
//! It prints, per mode and phase (before, during, after the slowdown), the worker's msg/s and
//! commit p99, and the neighbour's ops/s, p50 and p99; and draws `--plot`. The modes run in
//! the same order every time (fixed first), once each: compare them over several runs.

#![allow(
    clippy::print_stdout,
    reason = "the printed report is what a benchmark is for"
)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use e2e_tests::probes::gauge;
use e2e_tests::report::{counter, cpu_seconds, histogram_buckets, pids_of};
use e2e_tests::{Service, TestStack};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection as _, PgPool};
use tokio::task::JoinSet;

mod figures;
mod plot;

use figures::{neighbour_stats, print_table};

/// Load settings.
#[derive(Debug, Parser)]
struct Args {
    /// Messages preloaded before each mode's run.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u32).range(1..))]
    messages: u32,
    /// Length of each mode's run, from the worker's start, in seconds.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u64).range(3..))]
    seconds: u64,
    /// When the slowdown starts, in seconds from the worker's start.
    #[arg(long, default_value_t = 10)]
    slow_from: u64,
    /// When the slowdown ends, in seconds from the worker's start.
    #[arg(long, default_value_t = 25)]
    slow_until: u64,
    /// Concurrent neighbour clients (one connection each).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    clients: u32,
    /// Think time of each neighbour client between two operations, in milliseconds.
    #[arg(long, default_value_t = 5)]
    think_ms: u64,
    /// Rows in the neighbour's table.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    accounts: u32,
    /// Connections running the CPU-bound query during the slowdown.
    #[arg(long, default_value_t = 6)]
    hogs: u32,
    /// CPU work PostgreSQL does for each event the worker stores, as a heavier table (indexes,
    /// constraints) would: a BEFORE INSERT trigger hashes this many integers (10,000: about
    /// 1 ms here). Without it the worker waits on LocalStack, not on the database, and holds
    /// about 1 write in progress whatever its limit. 0 for none.
    #[arg(long, default_value_t = 10_000)]
    insert_cpu: u32,
    /// WORKER_CONCURRENCY (the ceiling in adaptive mode) and DATABASE_MAX_CONNECTIONS.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    concurrency: u32,
    /// Seconds of each calibration step (neighbour alone, neighbour beside the hogs); 0 skips it.
    #[arg(long, default_value_t = 5)]
    calibrate_seconds: u64,
    /// Where to draw the plot.
    #[arg(long, default_value = "docs/neighbour.png")]
    plot: PathBuf,
    /// Extra worker settings for both modes, NAME=VALUE (repeatable).
    #[arg(long = "set", value_parser = e2e_tests::report::parse_setting)]
    settings: Vec<(String, String)>,
}

/// The two modes: a label and `WORKER_ADAPTIVE_CONCURRENCY`.
const MODES: [(&str, &str); 2] = [("fixed", "false"), ("adaptive", "true")];
/// How often the worker's /metrics are read.
const SAMPLE_PERIOD: Duration = Duration::from_millis(250);
/// The neighbour's operation: one row, its own transaction (and commit).
const NEIGHBOUR_UPDATE: &str = "UPDATE bench_accounts SET balance = balance + 1 WHERE id = $1";
/// The hogs' query: pure CPU (about 0.13 s of a core alone here, 0.4 s under the load). The set-returning function
/// in the select list streams its rows; in FROM it would first fill a tuplestore and spill
/// to disk beyond `work_mem`.
const HOG_QUERY: &str =
    "SELECT sum(hashint4(g)::bigint) FROM (SELECT generate_series(1, 3000000) AS g) AS s";
/// `application_name` of the hogs' connections, to cancel their queries at the end.
const HOG_APP: &str = "bench-neighbour-hog";

/// One neighbour operation: its start, in seconds from t = 0, and its latency.
type Op = (f64, Duration);

/// One reading of the worker's /metrics, and PostgreSQL's CPU seconds so far.
#[derive(Debug, Clone, Default)]
struct Sample {
    at: f64,
    stored: f64,
    limit: f64,
    writes: f64,
    commit_buckets: Vec<(f64, f64)>,
    postgres_cpu: f64,
}

/// The hogs' work: queries finished and the seconds they took in all.
#[derive(Debug, Default, Clone, Copy)]
struct HogStats {
    queries: u64,
    seconds: f64,
}

/// One mode's run.
#[derive(Debug)]
struct ModeRun {
    label: &'static str,
    samples: Vec<Sample>,
    ops: Vec<Op>,
    hogs: HogStats,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.slow_from < args.slow_until && args.slow_until < args.seconds,
        "expected --slow-from < --slow-until < --seconds"
    );
    println!(
        "neighbour benchmark: {} messages per mode, {} s per run, slowdown from {} s to {} s ({} hogs), neighbour of {} clients with {} ms think time on {} rows, concurrency {} (pool {}), {} hashes per stored event, settings {:?}\n",
        args.messages,
        args.seconds,
        args.slow_from,
        args.slow_until,
        args.hogs,
        args.clients,
        args.think_ms,
        args.accounts,
        args.concurrency,
        args.concurrency,
        args.insert_cpu,
        args.settings
    );
    if args.calibrate_seconds > 0 {
        calibrate(&args).await?;
    }
    let mut runs = Vec::new();
    for (label, adaptive) in MODES {
        runs.push(run_mode(&args, label, adaptive).await?);
    }
    print_table(&args, &runs);
    plot::draw(&args.plot, &runs, &args)?;
    println!("\nplot: {}", args.plot.display());
    Ok(())
}

/// The neighbour alone, then beside the hogs, without a worker: how much the hogs slow
/// PostgreSQL down for a neighbour.
async fn calibrate(args: &Args) -> anyhow::Result<()> {
    let stack = TestStack::new("bench-neighbour-calibrate").await;
    prepare_database(&stack.db, args).await?;
    let step = args.calibrate_seconds as f64;
    let (stop, t0) = (Arc::new(AtomicBool::new(false)), Instant::now());
    let neighbours = start_neighbours(&stack.database_url, args, t0, Arc::clone(&stop)).await?;
    let hogs = slowdown(&stack, args.hogs, t0, step, 2.0 * step).await?;
    stop.store(true, Ordering::Relaxed);
    let ops = collect(neighbours).await?;
    stack.cleanup().await;
    println!("calibration (no worker; neighbour p50 / p99 ms, ops/s):");
    for (what, from, until) in [("alone", 0.5, step), ("beside the hogs", step, 2.0 * step)] {
        let (latencies, per_second) = neighbour_stats(&ops, from, until);
        println!(
            "- {what}: {:.2} / {:.2} ms, {per_second:.0} ops/s",
            latencies.percentile_ms(50.0),
            latencies.percentile_ms(99.0)
        );
    }
    println!(
        "- hog query: {:.2} s on average under load ({} finished)\n",
        hogs.seconds / hogs.queries.max(1) as f64,
        hogs.queries
    );
    Ok(())
}

/// One mode on a fresh queue and database: backlog, neighbour, worker, slowdown, samples.
async fn run_mode(args: &Args, label: &'static str, adaptive: &str) -> anyhow::Result<ModeRun> {
    let stack = TestStack::new(&format!("bench-neighbour-{label}")).await;
    prepare_database(&stack.db, args).await?;
    stack.preload(args.messages as usize).await;
    let concurrency = args.concurrency.to_string();
    let mut settings = vec![
        ("WORKER_ADAPTIVE_CONCURRENCY", adaptive),
        ("WORKER_CONCURRENCY", &concurrency),
        ("DATABASE_MAX_CONNECTIONS", &concurrency),
        ("RUST_LOG", "warn"),
    ];
    settings.extend(args.settings.iter().map(|(n, v)| (n.as_str(), v.as_str())));

    let mut seen = HashMap::new();
    let (stop, t0) = (Arc::new(AtomicBool::new(false)), Instant::now());
    let start = Sample {
        postgres_cpu: postgres_cpu(&mut seen),
        ..Sample::default()
    };
    let neighbours = start_neighbours(&stack.database_url, args, t0, Arc::clone(&stop)).await?;
    let (from, until) = (args.slow_from as f64, args.slow_until as f64);
    let worker = stack.spawn_worker(&settings).await;
    let (samples, hogs) = tokio::join!(
        sample(&worker, t0, args.seconds as f64, start, seen),
        slowdown(&stack, args.hogs, t0, from, until)
    );
    stop.store(true, Ordering::Relaxed);
    let ops = collect(neighbours).await?;
    worker.kill().await;
    stack.cleanup().await;
    Ok(ModeRun {
        label,
        samples: samples?,
        ops,
        hogs: hogs?,
    })
}

/// The neighbour's table and, with `--insert-cpu`, the trigger that makes stored events cost
/// PostgreSQL CPU.
async fn prepare_database(db: &PgPool, args: &Args) -> anyhow::Result<()> {
    let mut statements = vec![
        "CREATE TABLE bench_accounts (id integer PRIMARY KEY, balance bigint NOT NULL)".to_owned(),
        format!(
            "INSERT INTO bench_accounts SELECT g, 0 FROM generate_series(1, {}) AS g",
            args.accounts
        ),
    ];
    if args.insert_cpu > 0 {
        statements.push(format!(
            "CREATE FUNCTION bench_insert_cpu() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
             PERFORM sum(hashint4(g)) FROM generate_series(1, {}) AS g; RETURN NEW; END $$",
            args.insert_cpu
        ));
        statements.push(
            "CREATE TRIGGER bench_insert_cpu BEFORE INSERT ON webhook_events
             FOR EACH ROW EXECUTE FUNCTION bench_insert_cpu()"
                .to_owned(),
        );
    }
    for statement in statements {
        sqlx::query(&statement)
            .execute(db)
            .await
            .with_context(|| format!("preparing the database: {statement}"))?;
    }
    Ok(())
}

/// Connects the neighbour's clients and starts their loops, each until `stop`.
async fn start_neighbours(
    url: &str,
    args: &Args,
    t0: Instant,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<JoinSet<anyhow::Result<Vec<Op>>>> {
    let mut clients = JoinSet::new();
    for client in 0..args.clients {
        let mut connection = PgConnection::connect(url).await?;
        let (stop, accounts) = (Arc::clone(&stop), u64::from(args.accounts));
        let think = Duration::from_millis(args.think_ms);
        // splitmix64 with a fixed seed per client: every mode updates the same rows in the
        // same order.
        let mut state = u64::from(client);
        clients.spawn(async move {
            let mut ops = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = (state ^ (state >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                let id = i32::try_from((z ^ (z >> 31)) % accounts + 1)?;
                let started = Instant::now();
                sqlx::query(NEIGHBOUR_UPDATE)
                    .bind(id)
                    .execute(&mut connection)
                    .await
                    .context("the neighbour's UPDATE")?;
                ops.push((started.duration_since(t0).as_secs_f64(), started.elapsed()));
                tokio::time::sleep(think).await;
            }
            Ok(ops)
        });
    }
    Ok(clients)
}

/// Every client's operations, in order of start.
async fn collect(clients: JoinSet<anyhow::Result<Vec<Op>>>) -> anyhow::Result<Vec<Op>> {
    let mut ops = Vec::new();
    for client in clients.join_all().await {
        ops.extend(client?);
    }
    ops.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(ops)
}

/// `hogs` connections running [`HOG_QUERY`] in a loop from `from` to `until` seconds after
/// `t0`; queries still running at `until` are cancelled.
async fn slowdown(
    stack: &TestStack,
    hogs: u32,
    t0: Instant,
    from: f64,
    until: f64,
) -> anyhow::Result<HogStats> {
    let options = PgConnectOptions::from_str(&stack.database_url)?.application_name(HOG_APP);
    let mut connections = Vec::new();
    for _ in 0..hogs {
        connections.push(PgConnection::connect_with(&options).await?);
    }
    let stop = Arc::new(AtomicBool::new(false));
    tokio::time::sleep_until((t0 + Duration::from_secs_f64(from)).into()).await;
    let mut tasks = JoinSet::new();
    for mut connection in connections {
        let stop = Arc::clone(&stop);
        tasks.spawn(async move {
            let mut stats = HogStats::default();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                match sqlx::query(HOG_QUERY).execute(&mut connection).await {
                    Ok(_) => {
                        stats.queries += 1;
                        stats.seconds += started.elapsed().as_secs_f64();
                    }
                    // Cancelled at the end of the slowdown.
                    Err(_) if stop.load(Ordering::Relaxed) => break,
                    Err(error) => return Err(anyhow::Error::new(error).context("a hog query")),
                }
            }
            anyhow::Ok(stats)
        });
    }
    tokio::time::sleep_until((t0 + Duration::from_secs_f64(until)).into()).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = HogStats::default();
    loop {
        // Again until every hog has stopped: one may have started a query just before `stop`.
        sqlx::query(
            "SELECT pg_cancel_backend(pid) FROM pg_stat_activity
             WHERE application_name = $1 AND state = 'active'",
        )
        .bind(HOG_APP)
        .execute(&stack.db)
        .await
        .context("cancelling the hogs' queries")?;
        match tokio::time::timeout(Duration::from_millis(50), tasks.join_next()).await {
            Ok(Some(done)) => {
                let stats = done??;
                total.queries += stats.queries;
                total.seconds += stats.seconds;
            }
            Ok(None) => return Ok(total),
            Err(_) => {}
        }
    }
}

/// PostgreSQL's CPU seconds so far, those of backends that have exited included: `seen`
/// keeps each process's last reading.
fn postgres_cpu(seen: &mut HashMap<u32, f64>) -> f64 {
    for pid in pids_of("postgres") {
        if let Some(cpu) = cpu_seconds(pid) {
            seen.insert(pid, cpu);
        }
    }
    seen.values().sum()
}

/// Reads the worker's /metrics (and PostgreSQL's CPU) every [`SAMPLE_PERIOD`] until `seconds`
/// after `t0`; `start` is the reading at t = 0, `seen` as [`postgres_cpu`] left it then.
async fn sample(
    worker: &Service,
    t0: Instant,
    seconds: f64,
    start: Sample,
    mut seen: HashMap<u32, f64>,
) -> anyhow::Result<Vec<Sample>> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let url = worker.ops_url("/metrics");
    let mut samples = vec![start];
    let mut ticks = tokio::time::interval(SAMPLE_PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while t0.elapsed().as_secs_f64() < seconds {
        ticks.tick().await;
        // A slow answer (the machine is loaded on purpose) only costs a sample.
        let Ok(response) = http.get(&url).send().await else {
            continue;
        };
        let Ok(text) = response.text().await else {
            continue;
        };
        samples.push(Sample {
            at: t0.elapsed().as_secs_f64(),
            stored: counter(
                &text,
                "webhook_worker_messages_total",
                &[r#"outcome="stored""#],
            ),
            limit: gauge(&text, "webhook_worker_concurrency_limit", &[]).unwrap_or(0.0),
            writes: gauge(&text, "webhook_worker_writes_in_progress", &[]).unwrap_or(0.0),
            commit_buckets: histogram_buckets(&text, "webhook_worker_db_write_seconds"),
            postgres_cpu: postgres_cpu(&mut seen),
        });
    }
    Ok(samples)
}
