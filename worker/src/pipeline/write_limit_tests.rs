//! The adaptive limit against synthetic databases: healthy, saturated, slowed, overloaded.

use super::*;
use webhook_shared::limit::XorShift;

/// A database: a write of `rows` takes `base + per_row × rows` ms, times `in_progress /
/// capacity` beyond its capacity, times `slow(t)`, times 1.0..1.2 of noise.
struct Db {
    base_ms: f64,
    per_row_ms: f64,
    capacity: usize,
    slow: fn(f64) -> f64,
    rows: fn(f64) -> usize,
}

/// 2 to 7 ms for 1 to 100 rows, rows varying from write to write, no capacity limit.
fn healthy() -> Db {
    let rows = |t: f64| 1 + (t * 997.0) as usize % 100;
    let (base_ms, per_row_ms, capacity, slow) = (2.0, 0.05, 1000, |_| 1.0);
    Db {
        base_ms,
        per_row_ms,
        capacity,
        slow,
        rows,
    }
}

fn sample(rows: usize, acquire: Duration, write: Duration, in_progress: usize) -> WriteSample {
    WriteSample {
        rows,
        acquire,
        write,
        in_progress,
    }
}

/// A writer with `demand` batches always waiting (a backlog), driven by the controller.
struct Sim {
    c: ConcurrencyController,
    db: Db,
    start: Instant,
    now: Instant,
    in_flight: Vec<(Instant, WriteSample)>,
    rng: XorShift,
    demand: usize,
    /// (seconds, change) for every change.
    changes: Vec<(f64, Change)>,
    /// Seconds at which re-measurements started.
    remeasures: Vec<f64>,
}

impl Sim {
    fn new(max: usize, db: Db) -> Self {
        let start = Instant::now();
        let mut c = ConcurrencyController::new(max, true, start);
        c.limit.reseed(0x9e37_79b9_7f4a_7c15, start);
        let (in_flight, changes, remeasures) = (Vec::new(), Vec::new(), Vec::new());
        let (now, rng, demand) = (start, XorShift::new(42), usize::MAX);
        Self {
            c,
            db,
            start,
            now,
            in_flight,
            rng,
            demand,
            changes,
            remeasures,
        }
    }

    fn secs(&self) -> f64 {
        (self.now - self.start).as_secs_f64()
    }

    /// Runs until `until` s; returns the limits seen outside re-measurements.
    fn run(&mut self, until: f64) -> Vec<usize> {
        let mut seen = Vec::new();
        while self.secs() < until {
            while self.in_flight.len() < self.c.limit().min(self.demand) {
                let (t, in_progress) = (self.secs(), self.in_flight.len() + 1);
                let rows = (self.db.rows)(t);
                let load = (in_progress as f64 / self.db.capacity as f64).max(1.0);
                let noise = 1.0 + 0.2 * self.rng.next_unit();
                let ms = (self.db.base_ms + self.db.per_row_ms * rows as f64) * load;
                let write = Duration::from_secs_f64(ms * (self.db.slow)(t) * noise / 1e3);
                let sample = sample(rows, Duration::ZERO, write, in_progress);
                self.in_flight.push((self.now + write, sample));
            }
            let first = (0..self.in_flight.len()).min_by_key(|&i| self.in_flight[i].0);
            let (end, sample) = self.in_flight.swap_remove(first.expect("a write"));
            let measuring = self.c.remeasure.is_some();
            self.now = end;
            if let Some(change) = self.c.on_write(sample, end) {
                self.changes.push((self.secs(), change));
            }
            if !measuring && self.c.remeasure.is_some() {
                self.remeasures.push(self.secs());
            }
            if self.c.remeasure.is_none() {
                seen.push(self.c.limit());
            }
        }
        seen
    }

    /// Reasons of the decreases from `from` to `to` s, re-measurements left out.
    fn cuts(&self, from: f64, to: f64) -> Vec<Reason> {
        let during = self.changes.iter().filter(|(t, _)| (from..to).contains(t));
        during
            .filter_map(|(_, c)| c.reason.filter(|r| *r != Reason::Remeasure))
            .collect()
    }
}

#[test]
fn a_healthy_database_gets_max_within_two_seconds_and_keeps_it() {
    let mut sim = Sim::new(32, healthy());
    sim.run(2.0);
    assert_eq!(sim.c.limit(), 32);
    let seen = sim.run(120.0);
    assert!(seen.iter().all(|&l| l == 32), "{:?}", sim.changes);
    assert_eq!(sim.cuts(0.0, 120.0), []);
    assert!(sim.remeasures.len() >= 3, "{:?}", sim.remeasures);
    let ratio = sim.c.estimate().ratio;
    assert!((1.0..1.3).contains(&ratio), "{ratio}");
}

#[test]
fn a_database_of_capacity_6_gets_about_6() {
    let mut db = healthy();
    db.capacity = 6;
    let mut sim = Sim::new(32, db);
    sim.run(10.0);
    let seen = sim.run(120.0);
    let (low, high) = (seen.iter().min(), seen.iter().max());
    assert!(low >= Some(&5) && high <= Some(&8), "{low:?}..{high:?}");
}

#[test]
fn fuller_batches_are_not_mistaken_for_a_sicker_database() {
    // 1.2 ms for one row, 21 ms for 100: rows grow by one a second.
    let mut db = healthy();
    (db.base_ms, db.per_row_ms, db.rows) = (1.0, 0.2, |t| 1 + t as usize);
    let mut sim = Sim::new(16, db);
    sim.run(100.0);
    assert_eq!(sim.cuts(0.0, 100.0), []);
    assert_eq!(sim.c.limit(), 16);
}

#[test]
fn an_overload_error_cuts_at_once_and_once_per_window() {
    let mut sim = Sim::new(32, healthy());
    sim.run(2.0);
    let now = sim.now;
    let change = sim.c.on_overload(now).expect("a cut");
    assert_eq!((change.from, change.to), (32, 16));
    assert_eq!(change.reason.map(Reason::as_str), Some("overload"));
    assert_eq!(sim.c.on_overload(now + WINDOW / 2), None);
    let again = sim.c.on_overload(now + WINDOW).expect("a second cut");
    assert_eq!((again.to, again.reason), (8, Some(Reason::Overload)));
}

#[test]
fn a_slowdown_cuts_the_limit_and_recovery_restores_it() {
    let mut db = healthy();
    db.slow = |t| if (30.0..50.0).contains(&t) { 5.0 } else { 1.0 };
    let mut sim = Sim::new(32, db);
    sim.run(30.0);
    assert_eq!(sim.c.limit(), 32);
    let during = sim.run(50.0);
    assert!(sim.cuts(30.0, 31.0).contains(&Reason::Latency));
    assert!(during.iter().min() <= Some(&2), "{during:?}");
    sim.run(65.0);
    assert_eq!(sim.c.limit(), 32, "{:?}", sim.changes);
}

#[test]
fn fixed_mode_keeps_max() {
    let now = Instant::now();
    let mut c = ConcurrencyController::new(8, false, now);
    let write = Duration::from_secs(5);
    for i in 1..100 {
        assert_eq!(
            c.on_write(sample(1, write, write, 8), now + write * i),
            None
        );
        assert_eq!(c.on_overload(now + write * i), None);
    }
    assert_eq!(c.limit(), 8);
}

#[test]
fn periodic_remeasurement_adopts_a_raised_baseline() {
    // From 10 s on the database is three times slower at any concurrency.
    let mut db = healthy();
    db.slow = |t| if t < 10.0 { 1.0 } else { 3.0 };
    let mut sim = Sim::new(32, db);
    sim.run(12.0);
    assert_eq!(sim.c.limit(), 1);
    sim.run(100.0);
    assert_eq!(sim.c.limit(), 32);
    let first_increase = sim.changes.iter().find(|(t, c)| *t > 12.0 && c.to > c.from);
    assert!(first_increase.is_some_and(|(t, _)| *t > sim.remeasures[0]));
    for gap in sim.remeasures.windows(2).map(|w| w[1] - w[0]) {
        assert!((25.0..36.0).contains(&gap), "{:?}", sim.remeasures);
    }
    let baseline = sim.c.estimate().baseline_seconds;
    assert!(baseline > 0.006, "{baseline}");
}

#[test]
fn a_bucket_seeded_under_load_does_not_shrink_the_others() {
    let mut db = healthy();
    db.capacity = 8;
    let mut sim = Sim::new(32, db);
    sim.run(10.0);
    // As if the first 100-row batch had come during a stall.
    sim.c.baselines[bucket(100)] = Some(1.0);
    let seen = sim.run(150.0);
    let (low, high) = (seen.iter().min(), seen.iter().max());
    assert!(low >= Some(&7) && high <= Some(&11), "{low:?}..{high:?}");
    // No baseline went below the fastest possible write (2.05 ms for one row).
    let one_row = sim.c.baselines[bucket(1)].expect("seen");
    assert!(one_row >= 0.00205, "{one_row}");
}

#[test]
fn the_limit_grows_only_when_used() {
    let mut sim = Sim::new(32, healthy());
    sim.demand = 3;
    sim.run(10.0);
    assert_eq!(sim.c.limit(), 4);
}

#[test]
fn long_pool_waits_cut_the_limit() {
    let mut sim = Sim::new(8, healthy());
    sim.run(2.0);
    let (mut now, write) = (sim.now, Duration::from_millis(5));
    let waited = sample(1, Duration::from_millis(10), write, 8);
    let change = (0..100).find_map(|_| {
        now += write;
        sim.c.on_write(waited, now)
    });
    assert_eq!(change.and_then(|c| c.reason), Some(Reason::PoolWait));
}

#[test]
fn noise_at_a_limit_of_one_does_not_hold_it_there() {
    // One lucky write sets the baseline; every other write takes 1.6 times as long, at any
    // concurrency: noise, not load. Above the set point, but not sick.
    let start = Instant::now();
    let mut controller = ConcurrencyController::new(8, true, start);
    let mut highest = controller.limit();
    for n in 0..200u64 {
        let write = if n == 0 { 10 } else { 16 };
        let sample = WriteSample {
            rows: 100,
            acquire: Duration::ZERO,
            write: Duration::from_millis(write),
            in_progress: controller.limit(),
        };
        controller.on_write(sample, start + Duration::from_millis(20 * n));
        highest = highest.max(controller.limit());
    }
    assert!(highest >= 2, "held at 1 by noise");
}
