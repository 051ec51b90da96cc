//! The call limit against synthetic queues: one that scales out (constant latency), one that
//! serves a call at a time (latency grows with the calls in flight), one that slows down and
//! recovers, and one that fails calls.

use super::*;
use webhook_shared::limit::XorShift;

/// A queue: a call of 10 entries takes `latency(seconds since start, calls in flight)` ms,
/// times a noise factor drawn from a uniform `u` in 0..1.
type Model = fn(f64, usize) -> f64;

/// Mild noise: 1.0 to 1.2.
fn mild(u: f64) -> f64 {
    1.0 + 0.2 * u
}

/// Noise with a long tail, as real SQS calls show: 1 + an exponential of mean 1, so the median
/// call takes 1.7 times the fastest and one in a hundred 5.6 times.
fn long_tail(u: f64) -> f64 {
    1.0 - (1.0 - u).ln()
}

/// SQS: calls scale out, 20 ms whatever the concurrency.
fn scales_out(_: f64, _: usize) -> f64 {
    20.0
}

/// LocalStack: one call at a time, 4 ms of server work per call plus 1 ms of client and
/// network time.
fn one_at_a_time(_: f64, n: usize) -> f64 {
    1.0 + 4.0 * n as f64
}

/// A batcher with `demand` calls' worth of webhooks always waiting, driven by the limit.
struct Sim {
    limit: CallLimit,
    model: Model,
    noise: fn(f64) -> f64,
    start: Instant,
    now: Instant,
    /// (finish, sample) of the calls in flight.
    in_flight: Vec<(Instant, CallSample)>,
    rng: XorShift,
    demand: usize,
    changes: Vec<(f64, Change)>,
}

impl Sim {
    fn new(max: usize, model: Model) -> Self {
        let start = Instant::now();
        let mut limit = CallLimit::new(max, true, start);
        limit.limit.reseed(0x9e37_79b9_7f4a_7c15, start);
        Self {
            limit,
            model,
            noise: mild,
            start,
            now: start,
            in_flight: Vec::new(),
            rng: XorShift::new(42),
            demand: usize::MAX,
            changes: Vec::new(),
        }
    }

    fn secs(&self) -> f64 {
        (self.now - self.start).as_secs_f64()
    }

    fn noise(&mut self) -> f64 {
        (self.noise)(self.rng.next_unit())
    }

    /// Runs until `until` s; returns the limits seen outside re-measurements, with the time.
    fn run(&mut self, until: f64) -> Vec<(f64, usize)> {
        let mut seen = Vec::new();
        while self.secs() < until {
            while self.in_flight.len() < self.limit.limit().min(self.demand) {
                let n = self.in_flight.len() + 1;
                let ms = (self.model)(self.secs(), n) * self.noise();
                let latency = Duration::from_secs_f64(ms / 1000.0);
                let sample = CallSample {
                    entries: 10,
                    latency,
                    in_flight: n,
                };
                self.in_flight.push((self.now + latency, sample));
            }
            if self.demand > self.in_flight.len() {
                self.limit.on_backlog();
            }
            let next = (0..self.in_flight.len())
                .min_by_key(|&i| self.in_flight[i].0)
                .unwrap_or_else(|| unreachable!("the limit is at least 1"));
            let (finish, sample) = self.in_flight.swap_remove(next);
            self.now = finish;
            if let Some(change) = self.limit.on_call(sample, self.now) {
                self.changes.push((self.secs(), change));
            }
            if self.limit.remeasure.is_none() {
                seen.push((self.secs(), self.limit.limit()));
            }
        }
        seen
    }
}

fn limits_after(seen: &[(f64, usize)], from: f64) -> Vec<usize> {
    seen.iter()
        .filter(|(t, _)| *t >= from)
        .map(|&(_, l)| l)
        .collect()
}

#[test]
fn a_queue_that_scales_out_gets_the_maximum_under_backlog() {
    let mut sim = Sim::new(64, scales_out);
    let seen = sim.run(60.0);
    let first_max = seen.iter().find(|(_, l)| *l == 64).map(|&(t, _)| t);
    assert!(
        first_max.is_some_and(|t| t < 2.0),
        "slow start reaches 64 within 2 s: {first_max:?}"
    );
    let after = limits_after(&seen, 2.0);
    assert!(after.iter().all(|&l| l == 64), "{:?}", sim.changes);
    assert!(!sim.limit.saturated(), "calls do not queue");
}

#[test]
fn a_queue_that_scales_out_gets_the_maximum_despite_a_long_latency_tail() {
    let mut sim = Sim::new(64, scales_out);
    sim.noise = long_tail;
    let seen = sim.run(60.0);
    let after = limits_after(&seen, 5.0);
    let at_max = after.iter().filter(|&&l| l == 64).count();
    assert!(at_max * 10 >= after.len() * 9, "{:?}", sim.changes);
    assert!(!sim.limit.saturated(), "calls do not queue");
}

#[test]
fn a_queue_that_serves_one_call_at_a_time_settles_at_two_despite_a_long_latency_tail() {
    let mut sim = Sim::new(64, one_at_a_time);
    sim.noise = long_tail;
    let seen = sim.run(120.0);
    let after = limits_after(&seen, 2.0);
    assert!(
        after.iter().all(|&l| (1..=4).contains(&l)),
        "{:?}",
        sim.changes
    );
    assert!(sim.limit.saturated(), "a second call waits for the first");
}

#[test]
fn a_queue_that_serves_one_call_at_a_time_settles_at_two() {
    let mut sim = Sim::new(64, one_at_a_time);
    let seen = sim.run(120.0);
    let after = limits_after(&seen, 2.0);
    assert!(
        after.iter().all(|&l| (1..=3).contains(&l)),
        "{:?}",
        sim.changes
    );
    let at_two = after.iter().filter(|&&l| l == 2).count();
    assert!(
        at_two * 10 >= after.len() * 9,
        "mostly 2: {:?}",
        sim.changes
    );
    assert!(sim.limit.saturated(), "a second call waits for the first");
}

#[test]
fn a_slowdown_cuts_the_limit_and_recovery_restores_it() {
    // Scales out, except between 10 s and 20 s, when only 4 calls are served at once.
    fn slowing(t: f64, n: usize) -> f64 {
        if (10.0..20.0).contains(&t) {
            20.0 * (n as f64 / 4.0).max(1.0)
        } else {
            20.0
        }
    }
    let mut sim = Sim::new(64, slowing);
    let seen = sim.run(30.0);
    let slowed: Vec<usize> = seen
        .iter()
        .filter(|(t, _)| (12.0..20.0).contains(t))
        .map(|&(_, l)| l)
        .collect();
    assert!(!slowed.is_empty());
    assert!(
        slowed.iter().all(|&l| (4..=8).contains(&l)),
        "between 4 and twice 4 while slowed: {:?}",
        sim.changes
    );
    let cut = sim
        .changes
        .iter()
        .find(|(t, c)| *t >= 10.0 && c.reason == Some(Reason::Latency));
    assert!(
        cut.is_some_and(|(t, _)| *t < 11.0),
        "cut within a second (the first slow calls take 320 ms): {:?}",
        sim.changes
    );
    assert!(
        limits_after(&seen, 27.0).iter().all(|&l| l == 64),
        "back to 64 within 7 s: {:?}",
        sim.changes
    );
}

#[test]
fn a_queue_slower_for_good_gets_its_calls_back_after_a_remeasurement() {
    // Scales out, but from 5 s on every call takes three times as long.
    fn slower(t: f64, _: usize) -> f64 {
        if t < 5.0 { 20.0 } else { 60.0 }
    }
    let mut sim = Sim::new(64, slower);
    let seen = sim.run(90.0);
    let cut = sim.changes.iter().any(|(t, c)| *t >= 5.0 && c.to < 32);
    assert!(
        cut,
        "the slowdown looks like queueing at first: {:?}",
        sim.changes
    );
    assert!(
        limits_after(&seen, 80.0).iter().all(|&l| l == 64),
        "a re-measurement took the new baseline: {:?}",
        sim.changes
    );
}

#[test]
fn without_a_backlog_the_limit_does_not_grow() {
    let mut sim = Sim::new(64, scales_out);
    sim.demand = 3;
    let seen = sim.run(20.0);
    assert!(
        seen.iter().all(|&(_, l)| l <= 4),
        "grows only while used: {:?}",
        sim.changes
    );
}

#[test]
fn failed_calls_halve_the_limit_once_per_window() {
    let mut sim = Sim::new(64, scales_out);
    sim.run(3.0);
    assert_eq!(sim.limit.limit(), 64);
    let now = sim.now;
    let change = sim.limit.on_failure(now);
    assert_eq!(
        change,
        Some(Change {
            from: 64,
            to: 32,
            reason: Some(Reason::Failure)
        })
    );
    assert_eq!(sim.limit.on_failure(now + Duration::from_millis(10)), None);
    assert_eq!(sim.limit.limit(), 32, "the calls in flight fail alike");
    sim.limit.on_failure(now + WINDOW);
    assert_eq!(sim.limit.limit(), 16);
}

#[test]
fn a_fixed_limit_ignores_reports() {
    let now = Instant::now();
    let mut limit = CallLimit::new(8, false, now);
    assert_eq!(limit.limit(), 8);
    for n in 1..100 {
        let sample = CallSample {
            entries: 10,
            latency: Duration::from_millis(n * 10),
            in_flight: 8,
        };
        assert_eq!(
            limit.on_call(sample, now + Duration::from_millis(n * 50)),
            None
        );
    }
    assert_eq!(limit.on_failure(now), None);
    assert_eq!(limit.limit(), 8);
}
