//! How many batch writes (PostgreSQL transactions) may be in progress at once, between 1 and
//! `WORKER_CONCURRENCY`, worked out from what the writes show. A pure state machine: the
//! writer reports each finished write and each overload error with the time, and applies the
//! limit it gets back.
//!
//! Every window (250 ms and 5 writes at least) is judged by the median ratio of write latency
//! (pool wait + BEGIN..COMMIT) to its baseline, and the median pool wait. Long pool waits or a
//! ratio above 2 cut the limit at once, to where the ratio would be back at 1.3 (at most by
//! half); a smaller excess that would still put that point a whole write or more below the
//! limit takes one step down; a ratio up to 1.3 lets a used limit grow by one (doubling while
//! in slow start). An overload error cuts by half at once, once per window.
//!
//! Ideas taken, and why:
//! - Envoy's gradient controller: the baseline is measured at low concurrency and re-measured
//!   every ~30 s (jittered, so workers do not drop together) by holding the limit at 1 for a
//!   few writes. A minimum kept forever makes the controller too harsh once the database is
//!   legitimately slower; a sliding minimum creeps up under sustained overload until overload
//!   looks normal.
//! - Netflix's Gradient2: a tolerance on the ratio of recent to baseline latency, and cuts in
//!   proportion to it (the gradient), at most by half, rather than by a fixed factor.
//! - Netflix's AIMD and Vector's ARC: growth by one only while the limit is actually used (no
//!   growth while demand is below it), and multiplicative cuts on explicit errors, which say
//!   more than latency does.
//! - TCP slow start: begin at 1 and double per healthy window until the first sign of
//!   trouble, so a sick database is not hit by `max` writes at start, yet a healthy one gets
//!   `max` within a second or two, its baselines taken at low concurrency on the way.
//!
//! Specific to a database: commit latency grows with the rows in the batch, so baselines are
//! kept per row-count bucket (quarter octaves) and each write is compared with its own
//! bucket's; a bucket never seen is bounded by the nearest larger one, or seeded by its first
//! write without a decision. Medians, not means, so that one slow checkpoint cuts nothing.

use std::time::Duration;

use tokio::time::Instant;
use webhook_shared::limit::{Limit, MIN_LATENCY_SECONDS, Window, median};

/// Shortest span of writes one decision looks at.
const WINDOW: Duration = Duration::from_millis(250);
/// Fewest compared writes one decision looks at (a slow database makes windows longer).
const MIN_WINDOW_SAMPLES: usize = 5;
/// Most writes kept per window for its medians.
const MAX_WINDOW_SAMPLES: usize = 256;
/// Median latency ratio up to which the limit may grow: the set point. When latency grows in
/// proportion to the writes in progress beyond the database's capacity K, the limit settles
/// near 1.3 K: a short queue keeps the database busy (Envoy's 25% buffer, Vegas' alpha).
const INCREASE_TOLERANCE: f64 = 1.3;
/// Median latency ratio above which the limit is cut: well above what a fuller batch within
/// a bucket and ordinary noise cause.
const DECREASE_TOLERANCE: f64 = 2.0;
/// Median pool wait, relative to the baseline write, above which the limit is cut.
const POOL_WAIT_TOLERANCE: f64 = 0.5;
/// Smallest factor of one cut.
const MIN_DECREASE: f64 = 0.5;
/// Factor of the cut on an overload error (the database refused work: back off hard).
const OVERLOAD_DECREASE: f64 = 0.5;
/// Mean time between re-measurements of the baselines, jittered by ±[`REMEASURE_JITTER`].
const REMEASURE_INTERVAL: Duration = Duration::from_secs(30);
/// Relative jitter of [`REMEASURE_INTERVAL`].
const REMEASURE_JITTER: f64 = 0.15;
/// Limit held while re-measuring.
const REMEASURE_LIMIT: usize = 1;
/// Writes taken at that limit for the new baselines.
const REMEASURE_SAMPLES: usize = 10;
/// Least rise of the baselines a re-measurement adopts.
const REMEASURE_RISE: f64 = 1.2;
/// Row-count buckets per doubling of rows: a fuller batch in the same bucket is at most
/// 2^(1/4) = 1.19 times slower.
const BUCKETS_PER_OCTAVE: f64 = 4.0;
/// Row-count buckets (the last holds every batch of 4096 rows and more).
const BUCKETS: usize = 48;

/// One finished batch write, as the writer saw it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WriteSample {
    /// Rows in the transaction.
    pub(crate) rows: usize,
    /// Time spent waiting for a pool connection.
    pub(crate) acquire: Duration,
    /// Time from BEGIN to the end of COMMIT.
    pub(crate) write: Duration,
    /// Writes in progress when this one started, itself included.
    pub(crate) in_progress: usize,
}

/// Why the limit went down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reason {
    /// Writes took much longer than their baseline.
    Latency,
    /// Writes waited long for a pool connection.
    PoolWait,
    /// The database refused work (too many connections, statement timeout, serialization
    /// failure, deadlock).
    Overload,
    /// Held low for a moment to re-measure the baselines.
    Remeasure,
}

impl Reason {
    /// The metrics label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::Latency => "latency",
            Reason::PoolWait => "pool_wait",
            Reason::Overload => "overload",
            Reason::Remeasure => "remeasure",
        }
    }
}

/// A change of the limit.
pub(crate) type Change = webhook_shared::limit::Change<Reason>;

/// The latency estimate, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Estimate {
    /// Baseline latency of the latest write's row-count bucket, in seconds.
    pub(crate) baseline_seconds: f64,
    /// Median ratio of latency to baseline over the latest decided window.
    pub(crate) ratio: f64,
}

/// Baseline latency (seconds) per row-count bucket.
type Baselines = [Option<f64>; BUCKETS];

/// A re-measurement in progress (the limit to return to is kept by [`Limit`]).
#[derive(Debug)]
struct Remeasure {
    /// Baselines from the writes made at [`REMEASURE_LIMIT`].
    fresh: Baselines,
    samples: usize,
}

/// The limit on batch writes in progress; see the module documentation.
#[derive(Debug)]
pub(crate) struct ConcurrencyController {
    adaptive: bool,
    limit: Limit,
    baselines: Baselines,
    window: Window,
    ratios: Vec<f64>,
    waits: Vec<f64>,
    /// Whether writes in progress reached the limit during the window.
    used: bool,
    /// Whether an overload error came during the window.
    overloaded: bool,
    remeasure: Option<Remeasure>,
    estimate: Estimate,
}

impl ConcurrencyController {
    /// A controller with ceiling `max`. It starts at 1 and doubles while healthy (slow
    /// start), so that a sick database is not hit by `max` writes at once. Without `adaptive`
    /// the limit is always `max` and reports are ignored.
    pub(crate) fn new(max: usize, adaptive: bool, now: Instant) -> Self {
        Self {
            adaptive,
            limit: Limit::new(max, adaptive, REMEASURE_INTERVAL, REMEASURE_JITTER, now),
            baselines: [None; BUCKETS],
            window: Window::new(WINDOW, MIN_WINDOW_SAMPLES, MAX_WINDOW_SAMPLES, now),
            ratios: Vec::new(),
            waits: Vec::new(),
            used: false,
            overloaded: false,
            remeasure: None,
            estimate: Estimate::default(),
        }
    }

    /// Batch writes allowed in progress now.
    pub(crate) fn limit(&self) -> usize {
        self.limit.get()
    }

    /// The latency estimate, for metrics.
    pub(crate) fn estimate(&self) -> Estimate {
        self.estimate
    }

    /// Records a finished write; returns the change of the limit it caused, if any.
    pub(crate) fn on_write(&mut self, sample: WriteSample, now: Instant) -> Option<Change> {
        if !self.adaptive {
            return None;
        }
        let latency = (sample.acquire + sample.write)
            .as_secs_f64()
            .max(MIN_LATENCY_SECONDS);
        let bucket = bucket(sample.rows);
        if let Some(remeasure) = &mut self.remeasure {
            // Writes that started before the limit dropped say nothing about an idle database.
            if sample.in_progress > self.limit.get() {
                return None;
            }
            let fresh = &mut remeasure.fresh[bucket];
            *fresh = Some(fresh.map_or(latency, |b| b.min(latency)));
            remeasure.samples += 1;
            if remeasure.samples < REMEASURE_SAMPLES {
                return None;
            }
            return self.finish_remeasure(now);
        }
        // The own bucket's baseline, else the nearest larger bucket's (an upper bound).
        let known = self.baselines[bucket..].iter().flatten().next().copied();
        let baseline = known.map_or(latency, |b| b.min(latency));
        self.baselines[bucket] = Some(baseline);
        self.estimate.baseline_seconds = baseline;
        // A write that started under an older, higher limit does not judge this one.
        if known.is_none() || sample.in_progress > self.limit.get() {
            return None;
        }
        if self.window.admit() {
            self.ratios.push(latency / baseline);
            self.waits.push(sample.acquire.as_secs_f64() / baseline);
        }
        self.used |= sample.in_progress >= self.limit.get();
        if !self.window.is_complete(now) {
            return None;
        }
        self.decide(now)
    }

    /// Records an overload error (SQLSTATE 53300, 57014, 40001, 40P01): cuts the limit at once,
    /// at most once per window, since the writes already in progress may fail alike.
    pub(crate) fn on_overload(&mut self, now: Instant) -> Option<Change> {
        if !self.adaptive {
            return None;
        }
        self.overloaded = true;
        let cut = self
            .limit
            .failure(now, self.window.span(), OVERLOAD_DECREASE, Reason::Overload);
        if cut.is_cut() {
            self.reset_window(now);
        }
        cut.change()
    }

    /// Ends a window: cut, re-measure, hold or grow.
    fn decide(&mut self, now: Instant) -> Option<Change> {
        let ratio = median(&mut self.ratios);
        let wait = median(&mut self.waits);
        // At a limit of 1 this worker's writes cannot queue behind each other: a ratio between
        // the set point and the cut is the database's (or the machine's) noise, not load this
        // worker causes, so it does not hold the limit at 1.
        let tolerance = if self.limit.get() == 1 {
            DECREASE_TOLERANCE
        } else {
            INCREASE_TOLERANCE
        };
        let grow = self.used && !self.overloaded && ratio <= tolerance;
        self.estimate.ratio = ratio;
        self.reset_window(now);
        let limit = self.limit.get() as f64;
        // The gradient: the limit at which latency would be back at the set point.
        let target = limit * INCREASE_TOLERANCE / ratio;
        let cut = if wait > POOL_WAIT_TOLERANCE {
            Some((limit / (1.0 + wait), Reason::PoolWait))
        } else if ratio > DECREASE_TOLERANCE
            || (self.limit.in_slow_start() && ratio > INCREASE_TOLERANCE)
        {
            // Clearly sick, or the last doubling overshot: to the gradient's limit at once.
            Some((target, Reason::Latency))
        } else if target <= limit - 1.0 {
            // Above the set point by a whole write or more: one step down.
            Some((limit - 1.0, Reason::Latency))
        } else {
            None
        };
        // At 1 there is nothing to cut; only a re-measurement can tell whether the database
        // is sick or legitimately slower.
        if let Some((to, reason)) = cut.filter(|_| self.limit.get() > 1) {
            return self.limit.cut(to, MIN_DECREASE, reason);
        }
        if self.limit.remeasure_due(now) {
            self.remeasure = Some(Remeasure {
                fresh: [None; BUCKETS],
                samples: 0,
            });
            return self
                .limit
                .begin_remeasure(REMEASURE_LIMIT, Reason::Remeasure);
        }
        if !grow {
            return None;
        }
        self.limit.grow()
    }

    /// Adopts the re-measurement. A few writes cannot refill dozens of buckets, so when every
    /// bucket seen rose clearly, all baselines rise by the least of those rises (robust to
    /// noise); below [`REMEASURE_RISE`] they stay, so that they do not creep up by the noise
    /// of each re-measurement. Any bucket seen may also come down to its fresh value.
    fn finish_remeasure(&mut self, now: Instant) -> Option<Change> {
        let remeasure = self.remeasure.take()?;
        let fresh_and_old = remeasure.fresh.iter().zip(&self.baselines);
        let rise = fresh_and_old
            .filter_map(|(fresh, old)| Some((*fresh)? / (*old)?))
            .fold(f64::INFINITY, f64::min);
        let rise = if rise.is_finite() && rise > REMEASURE_RISE {
            rise
        } else {
            1.0
        };
        for (old, fresh) in self.baselines.iter_mut().zip(remeasure.fresh) {
            *old = match (old.map(|b| b * rise), fresh) {
                (Some(old), Some(fresh)) => Some(old.min(fresh)),
                (old, fresh) => old.or(fresh),
            };
        }
        self.reset_window(now);
        self.limit.end_remeasure(now)
    }

    fn reset_window(&mut self, now: Instant) {
        self.window.restart(now);
        self.ratios.clear();
        self.waits.clear();
        self.used = false;
        self.overloaded = false;
    }
}

/// The row-count bucket of a batch of `rows`.
fn bucket(rows: usize) -> usize {
    (((rows.max(1) as f64).log2() * BUCKETS_PER_OCTAVE) as usize).min(BUCKETS - 1)
}

#[cfg(test)]
#[path = "write_limit_tests.rs"]
mod tests;
