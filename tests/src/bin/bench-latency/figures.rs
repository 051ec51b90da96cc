//! The latency benchmark's figures: one phase's latencies from its requests and the commits
//! seen, the comparison with `webhook_end_to_end_seconds`, the CSV and the printed report.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use e2e_tests::latency::{self, Commits, Request};
use e2e_tests::report::{Latencies, quantile_between};
use tokio::time::Instant;

/// Targets of the issue, at 10% and 50% of the capacity: request to commit within these
/// multiples of the floor's.
const P50_TARGET: f64 = 1.5;
const P99_TARGET: f64 = 2.0;
/// Levels the targets apply to.
const TARGET_LEVELS: [u32; 2] = [10, 50];

/// A histogram's cumulative buckets `(le, count)`.
pub(crate) type Buckets = Vec<(f64, f64)>;

/// The path a phase's requests take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// HTTP to ingest, SQS, the worker.
    Pipeline,
    /// One `SendMessage`, a receive, one `INSERT`, one delete (see `latency_floor.rs`).
    Floor,
}

impl Kind {
    /// The letter in the phase's name and tags.
    pub(crate) fn letter(self) -> &'static str {
        match self {
            Self::Pipeline => "p",
            Self::Floor => "f",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Pipeline => "pipeline",
            Self::Floor => "floor",
        }
    }
}

/// The queue depths at one second of the run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Depth {
    pub(crate) second: f64,
    pub(crate) pipeline: u64,
    pub(crate) floor: u64,
}

/// One second of a phase: the request-to-commit latencies of the requests due in it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Second {
    /// Seconds since the run started.
    pub(crate) second: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
}

/// One open-loop phase's figures.
#[derive(Debug)]
pub(crate) struct Phase {
    pub(crate) name: String,
    pub(crate) level: u32,
    pub(crate) kind: Kind,
    pub(crate) rate: f64,
    sent: usize,
    dropped: usize,
    failed: usize,
    /// Accepted but never seen committed.
    missing: usize,
    /// Due to the answer (202, or SendMessage's), accepted requests.
    answer: Latencies,
    /// Due to the commit.
    commit: Latencies,
    /// Request to commit by the second each request was due.
    pub(crate) seconds: Vec<Second>,
    /// Pipeline only: `received_at` to the commit, measured from outside.
    outside_end_to_end: Latencies,
    /// Pipeline only: due to `received_at` (what the worker's metric cannot see).
    before_received: Latencies,
    /// Pipeline only: p50 and p99 of `webhook_end_to_end_seconds` over the phase, seconds.
    metric: Option<(f64, f64)>,
}

impl Phase {
    /// The figures of `requests` (seconds counted from `started`), with the commits seen, the
    /// rows' `received_at` (epoch seconds by tag) and the worker's histogram before and after.
    #[allow(
        clippy::too_many_arguments,
        reason = "one call site, every value named"
    )]
    pub(crate) fn new(
        name: String,
        level: u32,
        kind: Kind,
        rate: f64,
        started: Instant,
        requests: Vec<Request>,
        commits: &Commits,
        received: HashMap<String, f64>,
        histogram: (Buckets, Buckets),
    ) -> Self {
        let (now, wall_now) = (Instant::now(), epoch_seconds_now());
        let wall = |at: Instant| wall_now - (now - at).as_secs_f64();
        let mut by_second: BTreeMap<u64, Vec<Duration>> = BTreeMap::new();
        let (mut answer, mut commit) = (Vec::new(), Vec::new());
        let (mut outside, mut before_received) = (Vec::new(), Vec::new());
        let (mut dropped, mut failed, mut missing) = (0, 0, 0);
        for request in &requests {
            match request.answered {
                None => dropped += 1,
                Some((_, false)) => failed += 1,
                Some((at, true)) => answer.push(at - request.due),
            }
            if !request.accepted() {
                continue;
            }
            let tag = latency::tag(&name, request.k);
            let Some(committed) = commits.at(&tag) else {
                missing += 1;
                continue;
            };
            let latency = committed.saturating_duration_since(request.due);
            commit.push(latency);
            let second = (request.due - started).as_secs();
            by_second.entry(second).or_default().push(latency);
            if let Some(&received_at) = received.get(&tag) {
                outside.push(Duration::from_secs_f64(
                    (wall(committed) - received_at).max(0.0),
                ));
                before_received.push(Duration::from_secs_f64(
                    (received_at - wall(request.due)).max(0.0),
                ));
            }
        }
        let seconds = by_second
            .into_iter()
            .map(|(second, latencies)| {
                let latencies = Latencies::new(latencies);
                Second {
                    second: second as f64,
                    p50_ms: latencies.percentile_ms(50.0),
                    p99_ms: latencies.percentile_ms(99.0),
                }
            })
            .collect();
        let (before, after) = histogram;
        let metric = quantile_between(&before, &after, 0.5)
            .zip(quantile_between(&before, &after, 0.99))
            .filter(|_| kind == Kind::Pipeline);
        Self {
            name,
            level,
            kind,
            rate,
            sent: requests.len() - dropped,
            dropped,
            failed,
            missing,
            answer: Latencies::new(answer),
            commit: Latencies::new(commit),
            seconds,
            outside_end_to_end: Latencies::new(outside),
            before_received: Latencies::new(before_received),
            metric,
        }
    }
}

/// Seconds since the Unix epoch now.
fn epoch_seconds_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

/// `received_at` (epoch seconds) of the rows of phase `name`, by tag.
pub(crate) async fn received_at(
    db: &sqlx::PgPool,
    name: &str,
) -> anyhow::Result<HashMap<String, f64>> {
    let rows: Vec<(String, f64)> = sqlx::query_as(
        "SELECT payload->>'tag', extract(epoch FROM received_at)::float8 FROM webhook_events \
         WHERE payload->>'tag' LIKE $1",
    )
    .bind(format!("{name}-%"))
    .fetch_all(db)
    .await
    .context("reading received_at")?;
    Ok(rows.into_iter().collect())
}

/// `p50 / p99 / p99.9` in milliseconds.
fn three(latencies: &Latencies) -> String {
    format!(
        "{:.1} / {:.1} / {:.1}",
        latencies.percentile_ms(50.0),
        latencies.percentile_ms(99.0),
        latencies.percentile_ms(99.9)
    )
}

/// The printed report.
pub(crate) fn report(
    levels: &[u32],
    capacity: f64,
    phases: &[Phase],
    csv: &Path,
    png: &Path,
) -> String {
    let mut out = format!(
        "\nlatency benchmark: open loop at {levels:?}% of the capacity measured in this run ({capacity:.0} rows/s); every latency from the request's due time; ms as p50 / p99 / p99.9\n\n"
    );
    let _ = writeln!(
        out,
        "{:<6} {:<9} {:>7} {:>6} {:>7} {:>6} {:>7}  {:<26} {:<26}",
        "load",
        "path",
        "rate/s",
        "sent",
        "dropped",
        "failed",
        "missing",
        "to the answer",
        "request to commit"
    );
    for phase in phases {
        let _ = writeln!(
            out,
            "{:<6} {:<9} {:>7.0} {:>6} {:>7} {:>6} {:>7}  {:<26} {:<26}",
            format!("{}%", phase.level),
            phase.kind.label(),
            phase.rate,
            phase.sent,
            phase.dropped,
            phase.failed,
            phase.missing,
            three(&phase.answer),
            three(&phase.commit),
        );
    }
    out += "\nrequest to commit, pipeline against floor:\n";
    for &level in levels {
        let find = |kind| phases.iter().find(|p| p.level == level && p.kind == kind);
        let (Some(pipeline), Some(floor)) = (find(Kind::Pipeline), find(Kind::Floor)) else {
            continue;
        };
        let ratio = |p| pipeline.commit.percentile_ms(p) / floor.commit.percentile_ms(p).max(1e-3);
        let (p50, p99) = (ratio(50.0), ratio(99.0));
        let verdict = |ratio: f64, target: f64| {
            if !TARGET_LEVELS.contains(&level) {
                "no target at this load"
            } else if ratio <= target {
                "met"
            } else {
                "NOT met"
            }
        };
        let _ = writeln!(
            out,
            "  {level:>3}%: p50 {p50:.2}x (target <= {P50_TARGET}x: {}), p99 {p99:.2}x (target <= {P99_TARGET}x: {})",
            verdict(p50, P50_TARGET),
            verdict(p99, P99_TARGET),
        );
    }
    out += "\nwebhook_end_to_end_seconds (received_at to commit, inside the worker; interpolated in its buckets) against the same span from outside (received_at to the NOTIFY):\n";
    for phase in phases.iter().filter(|p| p.kind == Kind::Pipeline) {
        let metric = phase.metric.map_or_else(
            || "no samples".to_owned(),
            |(p50, p99)| format!("{:.1} / {:.1}", p50 * 1e3, p99 * 1e3),
        );
        let _ = writeln!(
            out,
            "  {:>3}%: metric p50 / p99 {metric} ms; outside p50 / p99 {:.1} / {:.1} ms ({} rows); due to received_at p50 / p99 {:.1} / {:.1} ms",
            phase.level,
            phase.outside_end_to_end.percentile_ms(50.0),
            phase.outside_end_to_end.percentile_ms(99.0),
            phase.outside_end_to_end.count(),
            phase.before_received.percentile_ms(50.0),
            phase.before_received.percentile_ms(99.0),
        );
    }
    let _ = writeln!(
        out,
        "\nper-second results: {}\nplot: {}",
        csv.display(),
        png.display()
    );
    out
}

/// One line per phase and second: request-to-commit p50 and p99; then the depths.
pub(crate) fn write_csv(path: &Path, phases: &[Phase], depths: &[Depth]) -> anyhow::Result<()> {
    let mut csv = String::from("series,phase,second,p50_ms,p99_ms,pipeline_depth,floor_depth\n");
    for phase in phases {
        for second in &phase.seconds {
            let _ = writeln!(
                csv,
                "latency,{},{:.0},{:.1},{:.1},,",
                phase.name, second.second, second.p50_ms, second.p99_ms
            );
        }
    }
    for depth in depths {
        let _ = writeln!(
            csv,
            "depth,,{:.1},,,{},{}",
            depth.second, depth.pipeline, depth.floor
        );
    }
    std::fs::write(path, csv).with_context(|| format!("writing {}", path.display()))
}
