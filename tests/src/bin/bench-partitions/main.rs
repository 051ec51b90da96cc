//! Benchmark of time partitions (issue 22): what the partitioned table and its dedup key table
//! cost the inserts, and what retention (`worker maintain` detaching and dropping an old
//! partition) does to the writes going on beside it.
//!
//! `scripts/bench.sh partitions [--part inserts|retention|both] [--connections 4]
//! [--seconds 20] [--rounds 3] [--variants old,new] [--explain] [--rate 200]
//! [--phase-seconds 60] [--retention-rounds 3] [--old-rows 1000000]`
//!
//! 1. **Inserts** (`inserts.rs`): one fresh database per variant; `--connections` loops each
//!    write batches of `--batch` rows (1 KiB JSON bodies, unique ids, `received_at` now) in
//!    a transaction, as the worker does, for `--seconds` per phase, the variants in rotated
//!    order each round. `old` is the first migration's flat table with the statement of
//!    before the partitions; `new` is the table `worker migrate` makes with
//!    `worker::insert_events`; the other variants are measurements of the fallbacks the plan
//!    names. Rows/s per phase, medians, the ratio to `old`, and the size per 1M rows.
//! 2. **Retention** (`retention.rs`): the real worker takes a steady stream sent straight to
//!    SQS; one old daily partition (120 days ago) is filled with `--old-rows` rows; phases of
//!    `--phase-seconds` without maintenance and with `worker maintain` (RETENTION=90d, which
//!    detaches that partition concurrently and drops it). p50/p99/max of the worker's
//!    `webhook_worker_db_write_seconds` per phase, and of its rows' `stored_at - received_at`.
//!
//! A benchmark prints figures; it never fails on them.

#![allow(
    clippy::print_stdout,
    reason = "the printed report is what a benchmark is for"
)]

mod inserts;
mod retention;

use clap::Parser;

/// Which parts run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    Inserts,
    Retention,
    Both,
}

/// Load settings.
#[derive(Debug, Parser)]
struct Args {
    /// Which part of the benchmark runs.
    #[arg(long, value_enum, default_value_t = Part::Both)]
    part: Part,
    #[command(flatten)]
    inserts: inserts::InsertArgs,
    #[command(flatten)]
    retention: retention::RetentionArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!(
        "partitions benchmark at {}; load averages at the start: {}\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        load_averages()
    );
    if matches!(args.part, Part::Inserts | Part::Both) {
        inserts::run(&args.inserts).await?;
    }
    if matches!(args.part, Part::Retention | Part::Both) {
        retention::run(&args.retention).await?;
    }
    println!("\nload averages at the end: {}", load_averages());
    Ok(())
}

/// The 1, 5 and 15 minute load averages (as `uptime` prints them), and the cores: the
/// machine is shared, so a figure taken under load says so.
fn load_averages() -> String {
    let loads = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let loads: Vec<&str> = loads.split_whitespace().take(3).collect();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    format!("{} ({cores} cores)", loads.join(", "))
}
