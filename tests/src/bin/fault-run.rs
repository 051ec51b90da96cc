//! Fault run: steady webhook load while the pipeline is hurt, then proof that nothing
//! accepted was lost or stored twice.
//!
//! Run it with `scripts/fault-run.sh` (which starts PostgreSQL and LocalStack and builds in
//! release mode); `scripts/fault-run.sh --quick` is the reduced run CI uses.
//!
//! N clients behave like webhook providers: each POSTs small JSON webhooks, each with its own
//! `x-delivery: <uuid>` header, to a source whose scheme takes that header as the event id,
//! and retries the same webhook (same body, same id) on 5xx and connection errors. Every
//! delivery id that got a 2xx is recorded. Meanwhile a fault schedule scaled to `--seconds`
//! runs: the worker is killed with SIGKILL every few seconds and a new one started; ingest is
//! stopped with SIGTERM and a new one started on a new port (clients follow the new URL);
//! PostgreSQL is cut for `--db-outage-seconds` (the worker reaches it through a TCP proxy);
//! SQS is frozen for `--sqs-freeze-seconds` by sending SIGSTOP to LocalStack, then SIGCONT.
//! Then the load stops, a clean worker drains the queue, and the database is checked: every
//! id that got a 2xx is stored, exactly once. The exit status is non-zero when anything was
//! lost or duplicated.
//!
//! **Run it alone.** SIGSTOP freezes the whole LocalStack process, so every other user of
//! LocalStack (tests, benchmarks, `scripts/run-local.sh`) stalls too: never run this in
//! parallel with `scripts/test.sh` or a benchmark. LocalStack is always sent SIGCONT again,
//! on error, panic and Ctrl-C too.
//!
//! LocalStack's pid comes from `$SW_STATE_DIR/localstack.pid` (default `.local/` in the
//! repository; `localstack-PORT.pid` when `LOCALSTACK_PORT` is not 4566).

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the printed report is what a fault run is for"
)]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use e2e_tests::faults::{
    Bodies, ClientStats, Provider, SOURCE, localstack_pid, tail, write_sources_file,
};
use e2e_tests::pg_proxy::PgProxy;
use e2e_tests::{QueueOptions, TestStack};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::sync::{RwLock, watch};
use tokio::time::Instant;

/// Fault-run settings.
#[derive(Debug, Parser)]
struct Args {
    /// Concurrent provider clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Length of the fault schedule, in seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// How long PostgreSQL is unreachable for the worker.
    #[arg(long, default_value_t = 20)]
    db_outage_seconds: u64,
    /// How long LocalStack (SQS) is frozen with SIGSTOP.
    #[arg(long, default_value_t = 10)]
    sqs_freeze_seconds: u64,
    /// Total new webhooks per second across all clients (retries come on top).
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Most seconds the clean worker may take to drain the queue at the end.
    #[arg(long, default_value_t = 120)]
    drain_timeout_seconds: u64,
    /// The reduced run for CI: --seconds 20 --db-outage-seconds 5 --sqs-freeze-seconds 3
    /// --clients 8 (explicit values of those flags are ignored).
    #[arg(long)]
    quick: bool,
}

/// LocalStack frozen with SIGSTOP; dropping this sends SIGCONT, whatever happened meanwhile.
struct Frozen {
    pid: Pid,
}

impl Frozen {
    fn freeze(pid: Pid) -> anyhow::Result<Self> {
        // The guard exists before the signal, so a SIGCONT follows even if the caller fails.
        let guard = Self { pid };
        kill(pid, Signal::SIGSTOP).with_context(|| format!("SIGSTOP to LocalStack ({pid})"))?;
        Ok(guard)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if let Err(error) = kill(self.pid, Signal::SIGCONT) {
            eprintln!(
                "fault-run: SIGCONT to LocalStack ({}) failed: {error}; run `kill -CONT {}`",
                self.pid, self.pid
            );
        }
    }
}

/// One scheduled fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    KillWorker,
    RestartIngest,
    FreezeSqs,
    ThawSqs,
    CutDb,
    RestoreDb,
}

/// The schedule: faults at seconds since the start, and when the load stops.
struct Plan {
    events: Vec<(f64, Fault)>,
    load_seconds: f64,
}

impl Plan {
    /// Ingest restart at 15 %, SQS freeze from 25 %, database outage from 45 % (or after the
    /// freeze), a worker kill every ~1/12 of the run (at least 2 s). A new worker needs SQS and
    /// the database (schema check) to start, so a kill inside the freeze or the outage starts
    /// its replacement when the window ends; kills within 0.5 s of a window's edge are skipped.
    fn new(seconds: u64, db_outage: u64, sqs_freeze: u64) -> Self {
        let s = seconds as f64;
        let ingest = 0.15 * s;
        let freeze = (0.25 * s).max(ingest + 1.0);
        let thaw = freeze + sqs_freeze as f64;
        let cut = (0.45 * s).max(thaw + 2.0);
        let restore = cut + db_outage as f64;
        let load_seconds = s.max(restore + 3.0);
        let mut events = vec![
            (ingest, Fault::RestartIngest),
            (freeze, Fault::FreezeSqs),
            (thaw, Fault::ThawSqs),
            (cut, Fault::CutDb),
            (restore, Fault::RestoreDb),
        ];
        let every = (s / 12.0).max(2.0);
        let near_edge = |t: f64| {
            [ingest, freeze, thaw, cut, restore]
                .iter()
                .any(|edge| (t - edge).abs() < 0.5)
        };
        let mut t = every;
        while t < load_seconds - 1.0 {
            if !near_edge(t) {
                events.push((t, Fault::KillWorker));
            }
            t += every;
        }
        events.sort_by(|a, b| a.0.total_cmp(&b.0));
        Self {
            events,
            load_seconds,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.seconds = 20;
        args.db_outage_seconds = 5;
        args.sqs_freeze_seconds = 3;
        args.clients = 8;
    }
    // Ctrl-C drops the run, and with it the SIGSTOP guard and every child process.
    tokio::select! {
        result = run(&args) => result,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    }
}

async fn run(args: &Args) -> anyhow::Result<()> {
    let localstack = localstack_pid()?;
    let stack = TestStack::with_queues(
        "fault-run",
        QueueOptions {
            // Failures during the outage must not send webhooks to the DLQ: the run checks
            // that everything accepted is stored.
            max_receive_count: 100,
            // Messages held by a killed worker come back quickly.
            visibility_timeout: 10,
            fifo: false,
        },
    )
    .await;
    let sources_file = write_sources_file("")?;
    let sources_path = sources_file.to_str().context("temp path is not UTF-8")?;
    let ingest_settings = [
        ("SOURCES_FILE", sources_path),
        ("SHUTDOWN_GRACE_SECONDS", "5"),
        ("RETRY_AFTER_SECONDS", "1"),
        // Shorter than the freeze, so that clients get 503s and retry (the default is 10 s).
        ("SEND_TIMEOUT_SECONDS", "2"),
    ];
    let proxy = PgProxy::start(&stack.database_url).await;
    let worker_settings = [
        ("DATABASE_URL", proxy.url()),
        ("WORKER_CONCURRENCY", "4"),
        ("DATABASE_MAX_CONNECTIONS", "4"),
        ("DATABASE_ACQUIRE_TIMEOUT_SECONDS", "2"),
        ("RETRY_BACKOFF_BASE_SECONDS", "1"),
        ("RETRY_BACKOFF_MAX_SECONDS", "5"),
    ];

    let mut ingest = stack.spawn_ingest(&ingest_settings).await;
    let mut worker = Some(stack.spawn_worker(&worker_settings).await);
    let url = Arc::new(RwLock::new(ingest.url(&format!("/webhooks/{SOURCE}"))));
    let (stop_tx, stop_rx) = watch::channel(false);
    let interval = Duration::from_secs_f64(args.clients as f64 / f64::from(args.rate.max(1)));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut clients = tokio::task::JoinSet::new();
    for number in 0..args.clients {
        let provider = Provider {
            number,
            http: http.clone(),
            url: Arc::clone(&url),
            stop: stop_rx.clone(),
            interval,
            bodies: Bodies::default(),
        };
        clients.spawn(provider.run());
    }

    let plan = Plan::new(
        args.seconds,
        args.db_outage_seconds,
        args.sqs_freeze_seconds,
    );
    let start = Instant::now();
    let mut injected: Vec<(f64, String)> = Vec::new();
    let mut frozen: Option<Frozen> = None;
    let mut db_cut = false;
    for &(at, fault) in &plan.events {
        tokio::time::sleep_until(start + Duration::from_secs_f64(at)).await;
        let began = start.elapsed().as_secs_f64();
        let what = match fault {
            Fault::KillWorker => {
                let Some(old) = worker.take() else {
                    println!("[{began:6.1} s] (no worker running, nothing to kill)");
                    continue;
                };
                old.kill().await;
                if frozen.is_some() || db_cut {
                    "kill -9 worker (replacement when the window ends)".to_owned()
                } else {
                    worker = Some(stack.spawn_worker(&worker_settings).await);
                    "kill -9 worker, new worker started".to_owned()
                }
            }
            Fault::RestartIngest => {
                let old =
                    std::mem::replace(&mut ingest, stack.spawn_ingest(&ingest_settings).await);
                let new_url = ingest.url(&format!("/webhooks/{SOURCE}"));
                // The clients move only once the old process is gone (and a moment later, as
                // a load balancer would): meanwhile they see its drain, then refused
                // connections, and retry.
                let status = old.terminate(Duration::from_secs(30)).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
                *url.write().await = new_url.clone();
                format!("SIGTERM ingest (exited: {status}), new ingest at {new_url}")
            }
            Fault::FreezeSqs => {
                frozen = Some(Frozen::freeze(localstack)?);
                format!(
                    "SIGSTOP LocalStack (pid {localstack}) for {} s",
                    args.sqs_freeze_seconds
                )
            }
            Fault::ThawSqs => {
                drop(frozen.take());
                let restarted = if worker.is_none() && !db_cut {
                    worker = Some(stack.spawn_worker(&worker_settings).await);
                    ", new worker started"
                } else {
                    ""
                };
                format!("SIGCONT LocalStack (pid {localstack}){restarted}")
            }
            Fault::CutDb => {
                db_cut = true;
                let open = proxy.cut().await;
                format!(
                    "PostgreSQL cut for {} s ({open} worker connections closed)",
                    args.db_outage_seconds
                )
            }
            Fault::RestoreDb => {
                proxy.restore().await;
                db_cut = false;
                if worker.is_none() && frozen.is_none() {
                    worker = Some(stack.spawn_worker(&worker_settings).await);
                    "PostgreSQL restored, new worker started".to_owned()
                } else {
                    "PostgreSQL restored".to_owned()
                }
            }
        };
        println!("[{began:6.1} s] {what}");
        injected.push((began, what));
    }
    drop(frozen);
    tokio::time::sleep_until(start + Duration::from_secs_f64(plan.load_seconds)).await;
    let load_seconds = start.elapsed().as_secs_f64();
    stop_tx.send_replace(true);
    let mut totals = ClientStats::default();
    while let Some(stats) = clients.join_next().await {
        totals.add(stats?);
    }
    println!(
        "[{:6.1} s] load stopped; clients done",
        start.elapsed().as_secs_f64()
    );

    // A clean worker, straight to PostgreSQL, drains what is left.
    if let Some(old) = worker.take() {
        old.kill().await;
    }
    let clean = stack
        .spawn_worker(&[
            ("WORKER_CONCURRENCY", "4"),
            ("DATABASE_MAX_CONNECTIONS", "4"),
        ])
        .await;
    let drain_deadline = Instant::now() + Duration::from_secs(args.drain_timeout_seconds);
    let mut left = stack.messages_in(&stack.queue_url).await;
    while left > 0 && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        left = stack.messages_in(&stack.queue_url).await;
    }
    println!(
        "[{:6.1} s] drain ended, {left} messages left in the queue",
        start.elapsed().as_secs_f64()
    );
    let in_dlq = stack.messages_in(&stack.dlq_url).await;

    let rows: Vec<(String, i64, Option<String>)> = sqlx::query_as(
        "SELECT id, count(*), max(payload->>'marker') FROM webhook_events WHERE source = $1 GROUP BY id",
    )
    .bind(SOURCE)
    .fetch_all(&stack.db)
    .await
    .context("reading the stored events")?;
    let other_sources: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_events WHERE source <> $1")
            .bind(SOURCE)
            .fetch_one(&stack.db)
            .await?;
    let stored: HashMap<&str, (i64, Option<&str>)> = rows
        .iter()
        .map(|(id, count, marker)| (id.as_str(), (*count, marker.as_deref())))
        .collect();
    let accepted: HashSet<&str> = totals.accepted.iter().map(|a| a.id.as_str()).collect();
    let mut lost: Vec<&str> = accepted
        .iter()
        .copied()
        .filter(|id| !stored.contains_key(id))
        .collect();
    lost.sort_unstable();
    let duplicates: Vec<(&str, i64)> = stored
        .iter()
        .filter(|(_, (count, _))| *count > 1)
        .map(|(id, (count, _))| (*id, *count))
        .collect();
    let mismatched: Vec<&str> = stored
        .iter()
        .filter(|(id, (_, marker))| *marker != Some(**id))
        .map(|(id, _)| *id)
        .collect();
    let stored_without_2xx = stored.keys().filter(|id| !accepted.contains(*id)).count();

    println!();
    println!(
        "fault run: {} clients, ~{} new webhooks/s, {} s schedule ({load_seconds:.1} s of load), DB outage {} s, SQS freeze {} s",
        args.clients, args.rate, args.seconds, args.db_outage_seconds, args.sqs_freeze_seconds
    );
    println!("faults injected:");
    for (at, what) in &injected {
        println!("  {at:6.1} s  {what}");
    }
    let worker_kills = injected
        .iter()
        .filter(|(_, what)| what.starts_with("kill -9"))
        .count();
    println!("  ({worker_kills} worker kills, 1 ingest restart, 1 SQS freeze, 1 DB outage)");
    println!("webhooks attempted:              {}", totals.attempted);
    println!("HTTP requests (retries incl.):   {}", totals.requests);
    println!("accepted (2xx):                  {}", accepted.len());
    println!("5xx seen by clients:             {}", totals.server_errors);
    println!(
        "connection errors/timeouts seen: {}",
        totals.connection_errors
    );
    println!(
        "other answers (4xx):             {}",
        totals.unexpected.len()
    );
    println!("abandoned at stop (no 2xx):      {}", totals.abandoned);
    println!("stored:                          {}", stored.len());
    println!("stored without a 2xx:            {stored_without_2xx}");
    println!("left in queue / in DLQ:          {left} / {in_dlq}");
    println!(
        "lost (2xx but not stored):       {} (must be 0)",
        lost.len()
    );
    println!(
        "duplicates (rows per id > 1):    {} (must be 0)",
        duplicates.len()
    );
    println!(
        "payload not matching its id:     {} (must be 0)",
        mismatched.len()
    );
    println!("rows of other sources:           {other_sources} (must be 0)");

    let failed = !lost.is_empty()
        || !duplicates.is_empty()
        || !mismatched.is_empty()
        || other_sources > 0
        || !totals.unexpected.is_empty()
        || accepted.is_empty();
    if failed {
        for id in lost.iter().take(20) {
            println!("  lost: {id}");
        }
        for (id, count) in duplicates.iter().take(20) {
            println!("  duplicate: {id} ({count} rows)");
        }
        for id in mismatched.iter().take(20) {
            println!("  payload mismatch: {id}");
        }
        for answer in totals.unexpected.iter().take(5) {
            println!("  unexpected answer: {answer}");
        }
        println!(
            "FAILED; the queues, the database ({}) and the logs under target/e2e-logs/fault-run-* are kept",
            stack.database_url
        );
        println!(
            "--- clean worker log (tail) ---\n{}",
            tail(&clean.log(), 40)
        );
        println!("--- ingest log (tail) ---\n{}", tail(&ingest.log(), 40));
        drop(clean);
        drop(ingest);
        let _ = std::fs::remove_file(&sources_file);
        std::process::exit(1);
    }
    println!("PASSED: every accepted webhook is stored exactly once");
    drop(clean);
    drop(ingest);
    drop(proxy);
    let _ = std::fs::remove_file(&sources_file);
    stack.cleanup().await;
    Ok(())
}
