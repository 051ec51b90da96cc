//! The latency benchmark's figures: one phase's latencies from its requests and the commits
//! seen, the comparison with `webhook_end_to_end_seconds`, the CSV and the printed report.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
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

/// CPU seconds each process of the run had used at one moment (or, from
/// [`Cpu::cores_since`], the cores each used on average since an earlier reading).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cpu {
    pub(crate) at: Instant,
    pub(crate) localstack: f64,
    pub(crate) postgres: f64,
    pub(crate) ingest: f64,
    pub(crate) worker: f64,
    pub(crate) bench: f64,
}

impl Cpu {
    /// The cores each process used on average between `earlier` and this reading.
    pub(crate) fn cores_since(&self, earlier: &Self) -> Self {
        let span = (self.at - earlier.at).as_secs_f64().max(1e-3);
        Self {
            at: self.at,
            localstack: (self.localstack - earlier.localstack) / span,
            postgres: (self.postgres - earlier.postgres) / span,
            ingest: (self.ingest - earlier.ingest) / span,
            worker: (self.worker - earlier.worker) / span,
            bench: (self.bench - earlier.bench) / span,
        }
    }
}

/// What a phase's load did to the machine and its queue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Load {
    /// Messages in the phase's queue when its last request was answered.
    pub(crate) backlog: u64,
    /// Cores each process used on average while the requests were sent.
    pub(crate) cpu: Cpu,
}

/// A probe slower than this marks its second as a LocalStack stall.
const STALL: Duration = Duration::from_millis(250);

/// The probes of LocalStack: when each was sent (seconds since the run started) and how long
/// it took.
#[derive(Debug, Clone, Default)]
pub(crate) struct Probes(Arc<Mutex<Vec<(f64, Duration)>>>);

impl Probes {
    /// Records one probe.
    pub(crate) fn record(&self, second: f64, took: Duration) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((second, took));
    }

    /// The seconds (since the run started) in which a probe took longer than [`STALL`].
    pub(crate) fn stalled(&self) -> BTreeSet<u64> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(_, took)| *took > STALL)
            .map(|(second, _)| *second as u64)
            .collect()
    }
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
    /// Due to the commit, leaving out requests due in a second of a LocalStack stall or the
    /// second before one.
    commit_calm: Latencies,
    /// Seconds of the phase with a LocalStack stall.
    stalls: usize,
    /// Request to commit by the second each request was due.
    pub(crate) seconds: Vec<Second>,
    /// Pipeline only: `received_at` to the commit, measured from outside.
    outside_end_to_end: Latencies,
    /// Pipeline only: due to `received_at` (what the worker's metric cannot see).
    before_received: Latencies,
    /// Pipeline only: p50 and p99 of `webhook_end_to_end_seconds` over the phase, seconds.
    metric: Option<(f64, f64)>,
    load: Load,
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
        load: Load,
        stalled: &BTreeSet<u64>,
    ) -> Self {
        let (now, wall_now) = (Instant::now(), epoch_seconds_now());
        let wall = |at: Instant| wall_now - (now - at).as_secs_f64();
        let mut by_second: BTreeMap<u64, Vec<Duration>> = BTreeMap::new();
        let (mut answer, mut commit, mut commit_calm) = (Vec::new(), Vec::new(), Vec::new());
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
            if !stalled.contains(&second) && !stalled.contains(&(second + 1)) {
                commit_calm.push(latency);
            }
            if let Some(&received_at) = received.get(&tag) {
                outside.push(Duration::from_secs_f64(
                    (wall(committed) - received_at).max(0.0),
                ));
                before_received.push(Duration::from_secs_f64(
                    (received_at - wall(request.due)).max(0.0),
                ));
            }
        }
        let stalls = by_second
            .keys()
            .filter(|second| stalled.contains(second))
            .count();
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
            commit_calm: Latencies::new(commit_calm),
            stalls,
            seconds,
            outside_end_to_end: Latencies::new(outside),
            before_received: Latencies::new(before_received),
            metric,
            load,
        }
    }

    /// Whether the path could not keep up: more than a second of requests still queued when
    /// the last one was answered.
    pub(crate) fn saturated(&self) -> bool {
        self.load.backlog as f64 > self.rate
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
        "{:<6} {:<9} {:>7} {:>6} {:>7} {:>6} {:>7}  {:<26} {:<26} {:>6}  {:<26}",
        "load",
        "path",
        "rate/s",
        "sent",
        "dropped",
        "failed",
        "missing",
        "to the answer",
        "request to commit",
        "stalls",
        "... outside LocalStack stalls"
    );
    for phase in phases {
        let _ = writeln!(
            out,
            "{:<6} {:<9} {:>7.0} {:>6} {:>7} {:>6} {:>7}  {:<26} {:<26} {:>6}  {:<26}",
            format!("{}%", phase.level),
            phase.kind.label(),
            phase.rate,
            phase.sent,
            phase.dropped,
            phase.failed,
            phase.missing,
            three(&phase.answer),
            three(&phase.commit),
            phase.stalls,
            three(&phase.commit_calm),
        );
    }
    let _ = writeln!(
        out,
        "(a stall: a second in which a GetQueueAttributes probe sent every 100 ms took over {STALL:?}; the last column leaves out the requests due in such a second or the one before)"
    );
    out += "\nwhile the requests were sent, cores used by LocalStack / PostgreSQL / ingest / worker / this benchmark; messages queued when the last answer came:\n";
    for phase in phases {
        let cpu = phase.load.cpu;
        let _ = writeln!(
            out,
            "  {:>3}% {:<9} {:.2} / {:.2} / {:.2} / {:.2} / {:.2}; queued {}{}",
            phase.level,
            phase.kind.label(),
            cpu.localstack,
            cpu.postgres,
            cpu.ingest,
            cpu.worker,
            cpu.bench,
            phase.load.backlog,
            if phase.saturated() {
                " (SATURATED: more than a second of requests behind)"
            } else {
                ""
            }
        );
    }
    out += "\nrequest to commit, pipeline against floor:\n";
    for &level in levels {
        let find = |kind| phases.iter().find(|p| p.level == level && p.kind == kind);
        let (Some(pipeline), Some(floor)) = (find(Kind::Pipeline), find(Kind::Floor)) else {
            continue;
        };
        // A saturated floor measures its own queue: compare with the floor at the highest
        // load it kept up with, a stricter bar.
        let (floor, note) = if floor.saturated() {
            match phases
                .iter()
                .filter(|p| p.kind == Kind::Floor && !p.saturated() && p.level < level)
                .max_by_key(|p| p.level)
            {
                Some(lower) => (
                    lower,
                    format!(
                        " (the floor saturates at {level}%: against the floor at {}%)",
                        lower.level
                    ),
                ),
                None => {
                    let _ = writeln!(
                        out,
                        "  {level:>3}%: the floor saturates and no lower load kept up; no comparison"
                    );
                    continue;
                }
            }
        } else {
            (floor, String::new())
        };
        let ratio = |p| pipeline.commit.percentile_ms(p) / floor.commit.percentile_ms(p).max(1e-3);
        let (p50, p99) = (ratio(50.0), ratio(99.0));
        let calm = |p| {
            pipeline.commit_calm.percentile_ms(p) / floor.commit_calm.percentile_ms(p).max(1e-3)
        };
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
            "  {level:>3}%: p50 {p50:.2}x (target <= {P50_TARGET}x: {}), p99 {p99:.2}x (target <= {P99_TARGET}x: {}); outside stalls p50 {:.2}x ({}), p99 {:.2}x ({}){note}",
            verdict(p50, P50_TARGET),
            verdict(p99, P99_TARGET),
            calm(50.0),
            verdict(calm(50.0), P50_TARGET),
            calm(99.0),
            verdict(calm(99.0), P99_TARGET),
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
