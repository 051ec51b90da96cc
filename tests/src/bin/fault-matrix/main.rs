//! The fault matrix (issue 18): each production fault under steady load through the whole
//! system, one row each, and one table of what happened: accepted, stored, lost, duplicates,
//! in the DLQ, time to recover, slowest 202. Exits non-zero when any row loses, duplicates or
//! dead-letters a webhook or takes over 60 s to recover.
//!
//! Run it with `scripts/fault-matrix.sh` (which starts PostgreSQL and LocalStack and builds in
//! release mode); `--quick` is the subset CI runs, `--only NAME[,NAME]` runs chosen rows,
//! `--fault-seconds N` sets every fault's duration. The full matrix writes its table to
//! `docs/fault-matrix.md`; other runs to `target/fault-matrix.md` (or `--output PATH`).
//!
//! The PostgreSQL-restart row stops the shared server: run the full matrix alone.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the printed table is what the fault matrix is for"
)]

mod inject;
mod measure;
mod rig;
mod rows;
mod table;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use e2e_tests::faults::{Bodies, repository_root};
use tokio::time::Instant;

use crate::measure::{Load, Outcome, Timeline, wait_until_stored};
use crate::rig::Rig;
use crate::rows::Row;

/// Load before the fault.
const LEAD_IN: Duration = Duration::from_secs(5);
/// Load after the fault.
const LOAD_AFTER: Duration = Duration::from_secs(10);
/// Longest wait after the fault's end for everything accepted to be stored.
const STORE_DEADLINE: Duration = Duration::from_secs(90);
/// The fault's duration in `--quick`.
const QUICK_SECONDS: u64 = 10;

/// Fault-matrix settings.
#[derive(Debug, Parser)]
struct Args {
    /// The subset CI runs, each fault for 10 s: silent, login-revoked, table-lock, s3-503,
    /// sqs-5xx, kill-worker.
    #[arg(long)]
    quick: bool,
    /// Only these rows (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Every fault's duration, in seconds (default: each row's own, or 10 with --quick).
    #[arg(long)]
    fault_seconds: Option<u64>,
    /// Where to write the table (default: docs/fault-matrix.md for the full matrix,
    /// target/fault-matrix.md otherwise).
    #[arg(long)]
    output: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Ctrl-C drops the run, and with it every child process and the PostgreSQL guard.
    let passed = tokio::select! {
        result = run(&args) => result?,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    };
    if !passed {
        std::process::exit(1);
    }
    Ok(())
}

/// Runs the chosen rows, prints and writes the table; `Ok(false)` when a row failed.
async fn run(args: &Args) -> anyhow::Result<bool> {
    let rows: Vec<Row> = if !args.only.is_empty() {
        args.only
            .iter()
            .map(|name| {
                Row::parse(name).with_context(|| {
                    let names: Vec<&str> = Row::ALL.iter().map(|row| row.name()).collect();
                    format!("no row named {name:?}; rows: {}", names.join(", "))
                })
            })
            .collect::<anyhow::Result<_>>()?
    } else if args.quick {
        Row::QUICK.to_vec()
    } else {
        Row::ALL.to_vec()
    };
    let full = !args.quick && args.only.is_empty() && args.fault_seconds.is_none();
    let mut outcomes = Vec::new();
    for row in rows {
        let seconds = args.fault_seconds.unwrap_or(if args.quick {
            QUICK_SECONDS
        } else {
            row.default_seconds()
        });
        println!("== {} for {seconds} s", row.name());
        // Its own task, so that a panic in the harness fails this row and not the run.
        let outcome = tokio::spawn(run_row(row, Duration::from_secs(seconds))).await;
        let outcome = match outcome {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(error)) => harness_failure(row, format!("{error:#}")),
            Err(panic) => harness_failure(row, format!("panicked: {panic}")),
        };
        println!(
            "   {}",
            if outcome.passed() {
                "pass".to_owned()
            } else {
                format!("FAIL: {}", outcome.failures.join(", "))
            }
        );
        outcomes.push(outcome);
    }

    let table = table::table(&outcomes);
    println!("\n{table}");
    let output = match &args.output {
        Some(path) => path.clone(),
        None if full => repository_root()?.join("docs/fault-matrix.md"),
        None => repository_root()?.join("target/fault-matrix.md"),
    };
    let info = table::RunInfo {
        command: std::iter::once("scripts/fault-matrix.sh".to_owned())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" "),
        profile: if cfg!(debug_assertions) {
            "dev (debug)".to_owned()
        } else {
            "release".to_owned()
        },
    };
    std::fs::write(&output, table::document(&info, &outcomes))
        .with_context(|| format!("writing {}", output.display()))?;
    println!("written to {}", output.display());
    Ok(outcomes.iter().all(Outcome::passed))
}

/// A row the harness could not run to its end.
fn harness_failure(row: Row, error: String) -> Outcome {
    Outcome {
        name: row.name(),
        seconds: 0.0,
        accepted: 0,
        stored: 0,
        lost: 0,
        duplicates: 0,
        in_dlq: 0,
        left_in_queue: 0,
        recovery_after_end: None,
        recovery_from_start: None,
        from_start: row.new_connections_work(),
        slowest_202: 0.0,
        unexpected: Vec::new(),
        failures: vec![format!("harness error: {error}")],
    }
}

/// One row: the system, the load, the fault, the wait, the numbers.
async fn run_row(row: Row, duration: Duration) -> anyhow::Result<Outcome> {
    let mut rig = Rig::start(row).await?;
    let bodies = if row.needs_s3() {
        Bodies {
            large_every: 10,
            large_bytes: 300_000,
        }
    } else {
        Bodies::default()
    };
    let load = Load::start(&rig.url, bodies)?;
    tokio::time::sleep(LEAD_IN).await;
    let start = chrono::Utc::now();
    let done = inject::inject(row, &mut rig, duration).await;
    let (end, ended) = (chrono::Utc::now(), Instant::now());
    let done = match done {
        Ok(done) => done,
        Err(error) => {
            drop(load);
            rig.finish(false).await;
            return Err(error);
        }
    };
    for line in &done {
        println!("   {line}");
    }
    tokio::time::sleep(LOAD_AFTER).await;
    let stats = load.stop().await?;
    let deadline = (ended + STORE_DEADLINE).max(Instant::now() + Duration::from_secs(15));
    wait_until_stored(&rig.stack, &stats.accepted, deadline).await?;
    let timeline = Timeline {
        name: row.name(),
        start,
        end,
        from_start: row.new_connections_work(),
    };
    let outcome = Outcome::measure(&rig.stack, &timeline, &stats).await?;
    println!(
        "   {} webhooks, {} requests, {} 5xx, {} connection errors, {} abandoned; {} left in the queue",
        stats.attempted,
        stats.requests,
        stats.server_errors,
        stats.connection_errors,
        stats.abandoned,
        outcome.left_in_queue
    );
    for answer in outcome.unexpected.iter().take(5) {
        println!("   unexpected answer: {answer}");
    }
    if !outcome.passed() {
        println!(
            "   kept for inspection: database {}, queue {}, logs under target/e2e-logs/fault-matrix-{}-*",
            rig.stack.database_url,
            rig.stack.queue_url,
            row.name()
        );
        println!("{}", rig.log_tails(25));
    }
    rig.finish(outcome.passed()).await;
    Ok(outcome)
}
