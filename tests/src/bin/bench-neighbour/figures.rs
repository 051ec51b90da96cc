//! The neighbour benchmark's figures: per phase (the printed table) and per second (the
//! plot), from a run's samples and neighbour operations.

use std::time::Duration;

use e2e_tests::report::{Latencies, quantile_between};

use super::{Args, ModeRun, Op, Sample};

/// The neighbour's latencies of the operations started in `[from, until)`, and its ops/s.
pub(crate) fn neighbour_stats(ops: &[Op], from: f64, until: f64) -> (Latencies, f64) {
    let inside: Vec<Duration> = ops
        .iter()
        .filter(|(at, _)| (from..until).contains(at))
        .map(|&(_, latency)| latency)
        .collect();
    let per_second = inside.len() as f64 / (until - from);
    (Latencies::new(inside), per_second)
}

/// The last reading at or before `t` (the first if none).
fn sample_at(samples: &[Sample], t: f64) -> &Sample {
    samples
        .iter()
        .rev()
        .find(|sample| sample.at <= t)
        .unwrap_or(&samples[0])
}

/// Stored messages per second between the readings at `from` and `until`.
pub(crate) fn stored_rate(samples: &[Sample], from: f64, until: f64) -> f64 {
    let (a, b) = (sample_at(samples, from), sample_at(samples, until));
    (b.stored - a.stored) / (b.at - a.at).max(1e-3)
}

/// The mean of the writes-in-progress readings in `[from, until)`; 0 without readings.
pub(crate) fn mean_writes(samples: &[Sample], from: f64, until: f64) -> f64 {
    let inside: Vec<f64> = samples[1..]
        .iter()
        .filter(|s| (from..until).contains(&s.at))
        .map(|s| s.writes)
        .collect();
    inside.iter().sum::<f64>() / inside.len().max(1) as f64
}

/// Prints the table: per mode and phase, the worker's and the neighbour's figures; then how
/// far each run drained and what the hogs did.
pub(crate) fn print_table(args: &Args, runs: &[ModeRun]) {
    let (from, until, end) = (
        args.slow_from as f64,
        args.slow_until as f64,
        args.seconds as f64,
    );
    println!(
        "| mode | phase | worker msg/s | worker commit p99 ms | concurrency limit, mean | writes in progress, mean / max | neighbour ops/s | neighbour p50 ms | neighbour p99 ms | PostgreSQL CPU, % of a core |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for run in runs {
        for (phase, a, b) in [
            ("before", 0.0, from),
            ("during", from, until),
            ("after", until, end),
        ] {
            let (first, last) = (sample_at(&run.samples, a), sample_at(&run.samples, b));
            // Commit p99 from the histogram's bucket counts at the phase's two ends: only
            // the commits of the phase, located within their bucket by linear interpolation
            // (PromQL's histogram_quantile); the buckets are about x2.5 apart.
            let commit_p99 = quantile_between(&first.commit_buckets, &last.commit_buckets, 0.99)
                .map_or("-".to_owned(), |p99| format!("{:.1}", p99 * 1000.0));
            let inside: Vec<&Sample> = run.samples[1..]
                .iter()
                .filter(|s| (a..b).contains(&s.at))
                .collect();
            let mean = |f: fn(&Sample) -> f64| {
                inside.iter().map(|s| f(s)).sum::<f64>() / inside.len().max(1) as f64
            };
            let max_writes = inside.iter().map(|s| s.writes).fold(0.0, f64::max);
            let (latencies, ops_per_second) = neighbour_stats(&run.ops, a, b);
            println!(
                "| {} | {phase} {a:.0}-{b:.0} s | {:.0} | {commit_p99} | {:.1} | {:.1} / {max_writes:.0} | {ops_per_second:.0} | {:.2} | {:.2} | {:.0} |",
                run.label,
                stored_rate(&run.samples, a, b),
                mean(|s| s.limit),
                mean(|s| s.writes),
                latencies.percentile_ms(50.0),
                latencies.percentile_ms(99.0),
                100.0 * (last.postgres_cpu - first.postgres_cpu) / (last.at - first.at).max(1e-3),
            );
        }
    }
    println!();
    for run in runs {
        let stored = run.samples.last().map_or(0.0, |s| s.stored);
        let drained = run
            .samples
            .iter()
            .find(|s| s.stored >= f64::from(args.messages));
        println!(
            "{}: {}; hogs finished {} queries of {:.2} s on average",
            run.label,
            drained.map_or(
                format!(
                    "{stored:.0} of {} messages stored by the end",
                    args.messages
                ),
                |s| format!(
                    "backlog drained at {:.1} s: no backlog from then on (--messages)",
                    s.at
                )
            ),
            run.hogs.queries,
            run.hogs.seconds / run.hogs.queries.max(1) as f64
        );
    }
}
