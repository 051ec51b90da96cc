//! How many `SendMessageBatch` calls may be in flight at once, between 1 and
//! `BATCH_MAX_IN_FLIGHT`, worked out from the call latency the batcher observes. A pure state
//! machine: the batcher reports each finished call (and each time a webhook had to wait for a
//! free call) with the time, and applies the limit it gets back.
//!
//! Why adapt: a fixed number is wrong for one of the queues ingest meets. LocalStack serves
//! calls one at a time (one Python core): a call's latency grows with the calls in flight, and
//! each extra call only splits the same webhooks into smaller batches, so more calls for the
//! same messages and less throughput; about 2 in flight with full batches is its best. SQS
//! scales out: latency stays flat as calls are added, so more calls in flight answer more
//! webhooks per second.
//!
//! Two estimates judge each window of calls (100 ms and 8 calls at least), both medians: the
//! latency ratio `r = l / b` of a call that took `l` where a call of its size takes `b` with
//! nothing queued ahead of it (the baseline), and TCP Vegas' queue estimate `n × (1 − b / l)`,
//! the calls (of the `n` in flight when it started) that were waiting at the server rather than
//! being served.
//! - Calls queue when more than [`CUT_QUEUE`] wait and latency is above [`CUT_RATIO`] times
//!   the baseline: the limit is cut to where about one call would wait (by at least one, at
//!   most half). Both, because the queue estimate alone reads ordinary latency noise as a
//!   queue once many calls are in flight, and the ratio alone cannot tell two calls sharing a
//!   one-call server (ratio 2, one waiting) from three (ratio 3, two waiting).
//! - Calls do not queue when the ratio is below [`GROW_RATIO`] (below [`CUT_RATIO`] at a
//!   limit of 1, where the batcher's calls cannot wait behind each other): the limit grows by
//!   one (doubling while in slow start), but only if it was used: a webhook waited for a free
//!   call during the window.
//! - In between it holds.
//!
//! A server whose latency is `n × c` therefore settles at 2 (3 when the batcher's own share of
//! the latency is as large as the server's), and one whose latency does not move climbs to the
//! ceiling while there is a backlog. A call that failed as a whole (throttling, a server fault,
//! a timeout) halves the limit, once per window. The batcher also asks whether calls queue at
//! the server ([`CallLimit::saturated`]) before it sends a batch that is not full beside calls
//! in flight.
//!
//! A baseline is the median latency of the latest [`BASELINE_SAMPLES`] calls of its batch
//! size (a call of 10 entries takes longer than a call of 1) that had no other call of this
//! batcher beside them: what a call costs the queue as it is now, without queueing behind
//! this batcher's own calls. A median, not the minimum: SQS latency has a long tail (the
//! median call takes well over the fastest), so against the minimum even a queue that scales
//! out would look queued. Under a steady backlog calls rarely go alone, so every ~30 s
//! (jittered) the limit is held at 1 for [`REMEASURE_SAMPLES`] calls to take fresh ones, as
//! the worker's adaptive limit does for the database (see `worker/src/pipeline/write_limit.rs`): a
//! baseline kept forever would read a queue that is slower for good as one that is
//! overloaded for good.

use std::time::Duration;

use tokio::time::Instant;
use webhook_shared::limit::{Limit, MIN_LATENCY_SECONDS, Window, median};
use webhook_shared::sqs::MAX_BATCH_ENTRIES;

/// Shortest span of calls one decision looks at.
const WINDOW: Duration = Duration::from_millis(100);
/// Fewest calls one decision looks at (a slow queue makes windows longer).
const MIN_WINDOW_SAMPLES: usize = 8;
/// Most calls kept per window for its median.
const MAX_WINDOW_SAMPLES: usize = 256;
/// Median latency ratio below which the limit may grow: above ordinary latency noise, below
/// two calls sharing a server that works one call at a time.
pub(crate) const GROW_RATIO: f64 = 1.5;
/// Median latency ratio above which the limit may be cut.
pub(crate) const CUT_RATIO: f64 = 2.0;
/// Calls waiting at the server (median estimate) above which the limit may be cut.
pub(crate) const CUT_QUEUE: f64 = 1.5;
/// Calls waiting at the server that a cut aims for: one call queued keeps a server that works
/// one call at a time busy while the batcher gathers the next batch.
const TARGET_QUEUE: f64 = 1.0;
/// Smallest factor of one cut.
const MIN_DECREASE: f64 = 0.5;
/// Mean time between re-measurements of the baselines, jittered by ±[`REMEASURE_JITTER`].
const REMEASURE_INTERVAL: Duration = Duration::from_secs(30);
/// Relative jitter of [`REMEASURE_INTERVAL`] (so that tasks do not re-measure together).
const REMEASURE_JITTER: f64 = 0.15;
/// Calls taken at a limit of 1 for the new baselines.
pub(crate) const REMEASURE_SAMPLES: usize = 10;
/// Calls alone per batch size whose median is the baseline.
pub(crate) const BASELINE_SAMPLES: usize = 9;
/// Fewest calls alone whose median may serve as a baseline.
const MIN_BASELINE_SAMPLES: usize = 3;
/// Fewest calls beside others in a window to judge [`CallLimit::saturated`] by.
const MIN_CONCURRENT_SAMPLES: usize = 3;

/// One finished `SendMessageBatch` call, as the batcher saw it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CallSample {
    /// Entries in the call.
    pub entries: usize,
    /// Time the call took.
    pub latency: Duration,
    /// Calls in flight when it started, itself included.
    pub in_flight: usize,
}

/// Why the limit went down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reason {
    /// Calls queued at the server.
    Latency,
    /// A call failed as a whole.
    Failure,
    /// Held at 1 for a moment to re-measure the baselines.
    Remeasure,
}

/// A change of the limit.
pub(crate) type Change = webhook_shared::limit::Change<Reason>;

/// The latest latencies (seconds) of calls of one batch size that went alone, and their
/// median.
#[derive(Clone, Copy, Debug, Default)]
struct Baseline {
    latest: [f64; BASELINE_SAMPLES],
    len: usize,
    next: usize,
    median: Option<f64>,
}

impl Baseline {
    fn push(&mut self, latency: f64) {
        self.latest[self.next] = latency;
        self.next = (self.next + 1) % BASELINE_SAMPLES;
        self.len = (self.len + 1).min(BASELINE_SAMPLES);
        if self.len >= MIN_BASELINE_SAMPLES {
            let mut sorted = self.latest;
            self.median = Some(median(&mut sorted[..self.len]));
        }
    }
}

/// A re-measurement in progress (the limit to return to is kept by [`Limit`]).
#[derive(Debug)]
struct Remeasure {
    /// Calls alone taken so far.
    samples: usize,
}

/// The limit on `SendMessageBatch` calls in flight; see the module documentation.
#[derive(Debug)]
pub(crate) struct CallLimit {
    adaptive: bool,
    limit: Limit,
    baselines: [Baseline; MAX_BATCH_ENTRIES],
    window: Window,
    ratios: Vec<f64>,
    queued: Vec<f64>,
    /// Latency ratios of the window's calls that went beside others.
    concurrent: Vec<f64>,
    /// Whether a webhook waited for a free call during the window.
    used: bool,
    remeasure: Option<Remeasure>,
    /// Median latency ratio of the calls that went beside others in the latest window that
    /// had some.
    concurrent_ratio: f64,
}

impl CallLimit {
    /// A limit with ceiling `max`. Adaptive, it starts at 1 and doubles while calls do not
    /// queue (slow start); otherwise it is always `max` and reports are ignored.
    pub(crate) fn new(max: usize, adaptive: bool, now: Instant) -> Self {
        Self {
            adaptive,
            limit: Limit::new(max, adaptive, REMEASURE_INTERVAL, REMEASURE_JITTER, now),
            baselines: [Baseline::default(); MAX_BATCH_ENTRIES],
            window: Window::new(WINDOW, MIN_WINDOW_SAMPLES, MAX_WINDOW_SAMPLES, now),
            ratios: Vec::new(),
            queued: Vec::new(),
            concurrent: Vec::new(),
            used: false,
            remeasure: None,
            concurrent_ratio: 0.0,
        }
    }

    /// Calls allowed in flight now.
    pub(crate) fn limit(&self) -> usize {
        self.limit.get()
    }

    /// Whether calls queue at the server: calls that went beside others took [`GROW_RATIO`]
    /// times their baseline or more (the median of the latest window that had some), so a
    /// call started now while others are in flight would wait behind them rather than be
    /// served beside them. Never, when not adaptive.
    pub(crate) fn saturated(&self) -> bool {
        self.adaptive && self.concurrent_ratio >= GROW_RATIO
    }

    /// Records that a webhook waited because every allowed call was in flight.
    pub(crate) fn on_backlog(&mut self) {
        self.used = true;
    }

    /// Records a finished call; returns the change of the limit it caused, if any.
    pub(crate) fn on_call(&mut self, sample: CallSample, now: Instant) -> Option<Change> {
        if !self.adaptive {
            return None;
        }
        let latency = sample.latency.as_secs_f64().max(MIN_LATENCY_SECONDS);
        let size = sample.entries.clamp(1, MAX_BATCH_ENTRIES) - 1;
        if sample.in_flight == 1 {
            self.baselines[size].push(latency);
        }
        if let Some(remeasure) = &mut self.remeasure {
            // Calls that started before the limit dropped say nothing about the queue alone.
            if sample.in_flight == 1 {
                remeasure.samples += 1;
                if remeasure.samples >= REMEASURE_SAMPLES {
                    return self.finish_remeasure(now);
                }
            }
            return None;
        }
        // The own size's baseline, else the nearest larger size's (an upper bound), else the
        // nearest smaller one's (a lower bound: cautious).
        let baseline = self.baselines[size..]
            .iter()
            .chain(self.baselines[..size].iter().rev())
            .find_map(|b| b.median)?;
        // A call that started under an older, higher limit does not judge this one.
        if sample.in_flight > self.limit.get() {
            return None;
        }
        if self.window.admit() {
            let ratio = latency / baseline;
            self.ratios.push(ratio);
            self.queued
                .push(sample.in_flight as f64 * (1.0 - 1.0 / ratio).max(0.0));
            if sample.in_flight > 1 {
                self.concurrent.push(ratio);
            }
        }
        if !self.window.is_complete(now) {
            return None;
        }
        self.decide(now)
    }

    /// Records a call that failed as a whole (throttled, a server fault, a timeout): halves
    /// the limit at once, at most once per window, since the calls in flight may fail alike.
    pub(crate) fn on_failure(&mut self, now: Instant) -> Option<Change> {
        if !self.adaptive {
            return None;
        }
        let cut = self
            .limit
            .failure(now, self.window.span(), MIN_DECREASE, Reason::Failure);
        if cut.is_cut() {
            self.reset_window(now);
        }
        cut.change()
    }

    /// Ends a window: cut, re-measure, hold or grow.
    fn decide(&mut self, now: Instant) -> Option<Change> {
        let ratio = median(&mut self.ratios);
        let queued = median(&mut self.queued);
        if self.concurrent.len() >= MIN_CONCURRENT_SAMPLES {
            self.concurrent_ratio = median(&mut self.concurrent);
        }
        let used = self.used;
        self.reset_window(now);
        if queued > CUT_QUEUE && ratio > CUT_RATIO && self.limit.get() > 1 {
            // The gradient: the limit at which about TARGET_QUEUE calls would wait.
            let target = self.limit.get() as f64 - queued + TARGET_QUEUE;
            return self.limit.cut(target, MIN_DECREASE, Reason::Latency);
        }
        if self.limit.remeasure_due(now) {
            self.remeasure = Some(Remeasure { samples: 0 });
            return self.limit.begin_remeasure(1, Reason::Remeasure);
        }
        let grow_below = if self.limit.get() == 1 {
            CUT_RATIO
        } else {
            GROW_RATIO
        };
        if ratio >= grow_below {
            self.limit.leave_slow_start();
            return None;
        }
        if !used {
            return None;
        }
        self.limit.grow()
    }

    /// Ends a re-measurement (its calls are in the baselines already): back to the limit
    /// before it.
    fn finish_remeasure(&mut self, now: Instant) -> Option<Change> {
        self.remeasure.take()?;
        self.reset_window(now);
        self.limit.end_remeasure(now)
    }

    fn reset_window(&mut self, now: Instant) {
        self.window.restart(now);
        self.ratios.clear();
        self.queued.clear();
        self.concurrent.clear();
        self.used = false;
    }
}

#[cfg(test)]
#[path = "call_limit_tests.rs"]
mod tests;
