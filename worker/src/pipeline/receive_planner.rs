//! How many `ReceiveMessage` calls to keep in flight, worked out from what the worker sees
//! rather than set by the operator. By Little's law the receives needed to carry a flow of
//! `rate` messages a second, each call taking `latency` and bringing `size`, are
//! `rate × latency / size`. The planner measures both (the rate over the last moments, the
//! latency of receives that brought something, since an empty long poll says nothing about
//! SQS's speed), adds headroom so the flow can grow, and bounds the result by the window
//! (there is never room for more than `window / size` receives) and a ceiling.
//!
//! While receives come back full the measured rate rises with each receive added, so the
//! number grows quickly to what the window or SQS allows; on a quiet queue it falls back to
//! one long poll. The window, not this number, keeps the worker from taking more than the
//! database drains: a receive starts only once there is room for all it asks for.

use std::time::Duration;

use tokio::time::Instant;

/// Most receives in flight at once, whatever the window.
pub(crate) const MAX_RECEIVES_IN_FLIGHT: usize = 16;
/// Growth headroom over the receives the measured flow needs.
const HEADROOM: f64 = 2.0;
/// How often the rate is folded into its moving average.
const RATE_PERIOD: Duration = Duration::from_millis(100);
/// Time constant of the rate's moving average: a period of this length weighs 63%.
const RATE_TIME_CONSTANT: Duration = Duration::from_millis(200);
/// Weight of the newest receive in the latency's moving average.
const SMOOTHING: f64 = 0.5;

/// Receives to keep in flight; see the module documentation.
#[derive(Debug)]
pub(crate) struct ReceivePlanner {
    size: usize,
    ceiling: usize,
    latency_seconds: Option<f64>,
    rate: f64,
    period_start: Instant,
    period_messages: usize,
}

impl ReceivePlanner {
    /// A planner for receives of `size` messages into a window of `window` messages.
    pub(crate) fn new(size: usize, window: usize, now: Instant) -> Self {
        let size = size.max(1);
        Self {
            size,
            ceiling: (window / size).clamp(1, MAX_RECEIVES_IN_FLIGHT),
            latency_seconds: None,
            rate: 0.0,
            period_start: now,
            period_messages: 0,
        }
    }

    /// Records a completed receive: how long it took and how many messages it brought.
    pub(crate) fn record(&mut self, latency: Duration, messages: usize, now: Instant) {
        if messages > 0 {
            let seconds = latency.as_secs_f64();
            self.latency_seconds = Some(
                self.latency_seconds
                    .map_or(seconds, |l| SMOOTHING * seconds + (1.0 - SMOOTHING) * l),
            );
        }
        self.period_messages += messages;
        self.fold_rate(now);
    }

    /// Receives wanted in flight now, between 1 and the ceiling.
    pub(crate) fn wanted(&mut self, now: Instant) -> usize {
        self.fold_rate(now);
        let Some(latency) = self.latency_seconds else {
            return 1;
        };
        let needed = self.rate * latency / self.size as f64;
        let wanted = (needed * HEADROOM).ceil() as usize + 1;
        wanted.clamp(1, self.ceiling)
    }

    /// The messages-per-second estimate (for metrics and tests).
    #[cfg(test)]
    pub(crate) fn rate(&self) -> f64 {
        self.rate
    }

    fn fold_rate(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.period_start);
        if elapsed < RATE_PERIOD {
            return;
        }
        let observed = self.period_messages as f64 / elapsed.as_secs_f64();
        let weight = 1.0 - (-elapsed.as_secs_f64() / RATE_TIME_CONSTANT.as_secs_f64()).exp();
        self.rate = weight * observed + (1.0 - weight) * self.rate;
        self.period_start = now;
        self.period_messages = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Simulates `seconds` of receiving where SQS answers each call in `latency` with up to
    /// 10 messages from a backlog, and returns the receives wanted at the end.
    fn simulate_backlog(planner: &mut ReceivePlanner, latency: Duration, seconds: u64) -> usize {
        let start = Instant::now();
        let mut now = start;
        while now < start + Duration::from_secs(seconds) {
            let in_flight = planner.wanted(now);
            now += latency;
            for _ in 0..in_flight {
                planner.record(latency, 10, now);
            }
        }
        planner.wanted(now)
    }

    #[test]
    fn starts_with_one_receive() {
        let now = Instant::now();
        assert_eq!(ReceivePlanner::new(10, 400, now).wanted(now), 1);
    }

    #[test]
    fn a_backlog_grows_the_receives_to_the_ceiling_within_a_second() {
        let mut planner = ReceivePlanner::new(10, 400, Instant::now());
        let wanted = simulate_backlog(&mut planner, Duration::from_millis(10), 1);
        assert_eq!(wanted, MAX_RECEIVES_IN_FLIGHT);
    }

    #[test]
    fn the_window_bounds_the_receives() {
        let mut planner = ReceivePlanner::new(10, 45, Instant::now());
        assert_eq!(
            simulate_backlog(&mut planner, Duration::from_millis(10), 2),
            4
        );
        let mut tiny = ReceivePlanner::new(3, 3, Instant::now());
        assert_eq!(simulate_backlog(&mut tiny, Duration::from_millis(10), 2), 1);
    }

    #[test]
    fn a_quiet_queue_falls_back_to_one_long_poll() {
        let mut planner = ReceivePlanner::new(10, 400, Instant::now());
        simulate_backlog(&mut planner, Duration::from_millis(10), 1);
        // Then the queue is empty: each long poll waits 20 s and brings nothing.
        let mut now = Instant::now() + Duration::from_secs(2);
        for _ in 0..3 {
            now += Duration::from_secs(20);
            planner.record(Duration::from_secs(20), 0, now);
        }
        assert_eq!(planner.wanted(now), 1);
    }

    #[test]
    fn a_trickle_needs_few_receives() {
        // 20 messages a second arriving one at a time; SQS answers in 50 ms.
        let mut planner = ReceivePlanner::new(10, 400, Instant::now());
        let mut now = Instant::now();
        for _ in 0..100 {
            now += Duration::from_millis(50);
            planner.record(Duration::from_millis(50), 1, now);
        }
        assert!(planner.wanted(now) <= 2, "{}", planner.wanted(now));
        assert!((planner.rate() - 20.0).abs() < 2.0, "{}", planner.rate());
    }
}
