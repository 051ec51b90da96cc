//! The mechanics both adaptive limits share: ingest's limit on `SendMessageBatch` calls in
//! flight (`ingest/src/sqs/call_limit.rs`) and the worker's limit on batch writes in progress
//! (`worker/src/pipeline/write_limit.rs`). Each decides *when* to move from what its own
//! latencies show; this holds the limit and *how* it moves: slow start (begin at 1 and double
//! per healthy window until the first trouble or the ceiling), growth by one after it, cuts
//! towards a target by at least one and at most by a factor, a cut at most once per window
//! for failures (the work in progress may fail alike), and re-measurements at jittered times
//! (so that tasks do not re-measure together) that hold the limit low and then return to it.
//! See each controller's module documentation for the decisions and their sources.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use tokio::time::Instant;

/// A change of a limit, with the controller's reason type `R`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change<R> {
    /// The limit before.
    pub from: usize,
    /// The limit now.
    pub to: usize,
    /// Why, for a decrease; `None` for an increase.
    pub reason: Option<R>,
}

/// Shortest latency a controller counts, in seconds, so that a zero duration cannot make a
/// zero baseline.
pub const MIN_LATENCY_SECONDS: f64 = 1e-6;

/// A limit between 1 and its ceiling, when it is next due for re-measurement, the limit to
/// return to after one in progress, and when it was last cut for a failure.
#[derive(Debug)]
pub struct Limit {
    limit: usize,
    max: usize,
    slow_start: bool,
    remeasure_interval: Duration,
    remeasure_jitter: f64,
    next_remeasure: Instant,
    rng: XorShift,
    /// The limit before the re-measurement in progress.
    saved: Option<usize>,
    last_failure_cut: Option<Instant>,
}

/// The window a controller judges by: at least `span` long and `min_samples` samples, of
/// which it keeps at most `max_samples` for its medians.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    span: Duration,
    min_samples: usize,
    max_samples: usize,
    start: Instant,
    samples: usize,
}

impl Window {
    /// A window starting at `now`.
    pub fn new(span: Duration, min_samples: usize, max_samples: usize, now: Instant) -> Self {
        Self {
            span,
            min_samples,
            max_samples,
            start: now,
            samples: 0,
        }
    }

    /// Its shortest span (also the least time between two cuts for failures).
    pub fn span(&self) -> Duration {
        self.span
    }

    /// Counts a sample in, if the window has room to keep it.
    pub fn admit(&mut self) -> bool {
        let room = self.samples < self.max_samples;
        self.samples += usize::from(room);
        room
    }

    /// Whether the window has lasted its span and holds its samples: time to decide.
    pub fn is_complete(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.start) >= self.span && self.samples >= self.min_samples
    }

    /// Starts the next window at `now`.
    pub fn restart(&mut self, now: Instant) {
        self.start = now;
        self.samples = 0;
    }
}

/// What a failure did to the limit (see [`Limit::failure`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureCut<R> {
    /// Nothing now: the limit was cut for a failure within the window already, or a
    /// re-measurement is in progress (it will return to a cut limit).
    Skipped,
    /// Cut now: the controller starts a new window.
    Cut(Option<Change<R>>),
}

impl<R> FailureCut<R> {
    /// Whether the limit was cut now (the controller then starts a new window).
    pub fn is_cut(&self) -> bool {
        matches!(self, Self::Cut(_))
    }

    /// The change it made, if any.
    pub fn change(self) -> Option<Change<R>> {
        match self {
            Self::Cut(change) => change,
            Self::Skipped => None,
        }
    }
}

/// A xorshift64 generator: cheap, seedable, good enough for jitter and simulations.
#[derive(Clone, Copy, Debug)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from `seed` (any value; zero is avoided).
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// The next value, uniform in `0.0..1.0`.
    pub fn next_unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Limit {
    /// A limit with ceiling `max` (at least 1): at 1 in slow start when `adaptive`, else at
    /// `max`. Re-measurements fall every `remeasure_interval`, jittered by ± the fraction
    /// `remeasure_jitter`, the first one interval from `now`.
    pub fn new(
        max: usize,
        adaptive: bool,
        remeasure_interval: Duration,
        remeasure_jitter: f64,
        now: Instant,
    ) -> Self {
        let max = max.max(1);
        let mut limit = Self {
            limit: if adaptive { 1 } else { max },
            max,
            slow_start: true,
            remeasure_interval,
            remeasure_jitter,
            next_remeasure: now,
            rng: XorShift::new(RandomState::new().hash_one(0u8)),
            saved: None,
            last_failure_cut: None,
        };
        limit.schedule_remeasure(now);
        limit
    }

    /// The limit now.
    pub fn get(&self) -> usize {
        self.limit
    }

    /// Whether it is still in slow start (doubling), before its first trouble.
    pub fn in_slow_start(&self) -> bool {
        self.slow_start
    }

    /// Ends slow start without changing the limit.
    pub fn leave_slow_start(&mut self) {
        self.slow_start = false;
    }

    /// Raises the limit: doubles it in slow start, else by one; never past the ceiling, and
    /// slow start ends there.
    pub fn grow<R>(&mut self) -> Option<Change<R>> {
        let step = if self.slow_start { self.limit } else { 1 };
        let to = (self.limit + step).min(self.max);
        self.slow_start &= to < self.max;
        self.set(to, None)
    }

    /// Lowers the limit towards `to`: by at least one, to no less than `min_factor` of it,
    /// never below 1. Ends slow start.
    pub fn cut<R>(&mut self, to: f64, min_factor: f64, reason: R) -> Option<Change<R>> {
        self.slow_start = false;
        let to = to.max(self.limit as f64 * min_factor) as usize;
        self.set(
            to.clamp(1, self.limit.saturating_sub(1).max(1)),
            Some(reason),
        )
    }

    /// Sets the limit; the change, if it moved.
    pub fn set<R>(&mut self, to: usize, reason: Option<R>) -> Option<Change<R>> {
        let from = std::mem::replace(&mut self.limit, to);
        (from != to).then_some(Change { from, to, reason })
    }

    /// Whether a re-measurement is due.
    pub fn remeasure_due(&self, now: Instant) -> bool {
        now >= self.next_remeasure
    }

    /// Seeds the jitter and schedules the next re-measurement from `now`, so that simulations
    /// of a controller are reproducible.
    pub fn reseed(&mut self, seed: u64, now: Instant) {
        self.rng = XorShift::new(seed);
        self.schedule_remeasure(now);
    }

    /// Sets the next re-measurement one jittered interval after `now`.
    pub fn schedule_remeasure(&mut self, now: Instant) {
        let factor = 1.0 + self.remeasure_jitter * (2.0 * self.rng.next_unit() - 1.0);
        self.next_remeasure = now + self.remeasure_interval.mul_f64(factor);
    }

    /// Whether a re-measurement is in progress.
    pub fn remeasuring(&self) -> bool {
        self.saved.is_some()
    }

    /// Starts a re-measurement: holds the limit at `hold` (or lower) until
    /// [`end_remeasure`](Self::end_remeasure).
    pub fn begin_remeasure<R>(&mut self, hold: usize, reason: R) -> Option<Change<R>> {
        self.saved = Some(self.limit);
        self.set(hold.clamp(1, self.limit), Some(reason))
    }

    /// Ends the re-measurement: back to the limit before it, the next one scheduled from `now`.
    pub fn end_remeasure<R>(&mut self, now: Instant) -> Option<Change<R>> {
        let saved = self.saved.take()?;
        self.schedule_remeasure(now);
        self.set(saved, None)
    }

    /// A failure that says the server refused work (overload, throttling, a failed call):
    /// cuts the limit by `factor` at once, at most once per `window` since the work already
    /// in progress may fail alike. During a re-measurement the limit to return to is cut.
    pub fn failure<R>(
        &mut self,
        now: Instant,
        window: Duration,
        factor: f64,
        reason: R,
    ) -> FailureCut<R> {
        if self
            .last_failure_cut
            .is_some_and(|at| now.saturating_duration_since(at) < window)
        {
            return FailureCut::Skipped;
        }
        self.last_failure_cut = Some(now);
        if let Some(saved) = &mut self.saved {
            *saved = ((*saved as f64 * factor) as usize).max(1);
            return FailureCut::Skipped;
        }
        FailureCut::Cut(self.cut(self.limit as f64 * factor, factor, reason))
    }
}

/// The median of a non-empty slice (the upper middle for an even length; sorts it).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_unstable_by(f64::total_cmp);
    values[values.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(max: usize) -> Limit {
        Limit::new(max, true, Duration::from_secs(30), 0.15, Instant::now())
    }

    #[test]
    fn slow_start_doubles_to_the_ceiling_then_growth_is_by_one() {
        let mut l = limit(6);
        let grown: Vec<usize> = (0..3)
            .filter_map(|_| l.grow::<()>().map(|c| c.to))
            .collect();
        assert_eq!(grown, [2, 4, 6]);
        assert!(!l.in_slow_start());
        l.cut(3.0, 0.5, ());
        assert_eq!(l.grow::<()>().map(|c| c.to), Some(4));
    }

    #[test]
    fn cuts_go_down_by_at_least_one_and_at_most_the_factor() {
        let mut l = limit(16);
        l.set::<()>(10, None);
        assert_eq!(l.cut(9.9, 0.5, "r").map(|c| c.to), Some(9));
        assert_eq!(l.cut(1.0, 0.5, "r").map(|c| c.to), Some(4));
        l.set::<()>(1, None);
        assert_eq!(l.cut(0.0, 0.5, "r"), None);
    }

    #[test]
    fn a_fixed_limit_starts_at_its_ceiling() {
        let l = Limit::new(8, false, Duration::from_secs(30), 0.15, Instant::now());
        assert_eq!(l.get(), 8);
    }

    #[test]
    fn re_measurements_fall_within_the_jitter() {
        let now = Instant::now();
        let mut l = limit(4);
        for _ in 0..100 {
            l.schedule_remeasure(now);
            assert!(!l.remeasure_due(now + Duration::from_millis(25_499)));
            assert!(l.remeasure_due(now + Duration::from_millis(34_501)));
        }
    }

    #[test]
    fn a_failure_cuts_once_per_window_and_a_remeasurement_returns_to_the_cut_limit() {
        let now = Instant::now();
        let window = Duration::from_millis(250);
        let mut l = limit(16);
        l.set::<()>(8, None);
        assert_eq!(
            l.failure(now, window, 0.5, "overload"),
            FailureCut::Cut(Some(Change {
                from: 8,
                to: 4,
                reason: Some("overload")
            }))
        );
        assert_eq!(
            l.failure(now + window / 2, window, 0.5, "overload"),
            FailureCut::Skipped
        );
        assert_eq!(l.get(), 4);
        assert_eq!(l.begin_remeasure(1, "remeasure").map(|c| c.to), Some(1));
        assert!(l.remeasuring());
        assert_eq!(
            l.failure(now + window, window, 0.5, "overload"),
            FailureCut::Skipped
        );
        assert_eq!(l.end_remeasure::<()>(now + window).map(|c| c.to), Some(2));
        assert!(!l.remeasuring());
        assert_eq!(l.end_remeasure::<()>(now + window), None);
    }

    #[test]
    fn a_window_completes_after_its_span_and_its_samples_and_keeps_at_most_its_maximum() {
        let now = Instant::now();
        let mut w = Window::new(Duration::from_millis(100), 2, 3, now);
        assert!(w.admit());
        assert!(!w.is_complete(now + Duration::from_secs(1)), "one sample");
        assert!(w.admit());
        assert!(!w.is_complete(now + Duration::from_millis(99)), "too short");
        assert!(w.is_complete(now + Duration::from_millis(100)));
        assert!(w.admit());
        assert!(!w.admit(), "full");
        w.restart(now + Duration::from_secs(1));
        assert!(!w.is_complete(now + Duration::from_secs(2)));
    }

    #[test]
    fn the_median_is_the_middle_value() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 3.0);
    }
}
