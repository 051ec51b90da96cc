//! Several worker processes sharing one `DATABASE_CONNECTION_BUDGET` through their lease
//! table, against real LocalStack and PostgreSQL: the shares shrink as workers join, the
//! connections `pg_stat_activity` shows never exceed the budget, a worker killed with
//! SIGKILL gives its share back within a lease period and one that stops gracefully at once,
//! a lone worker gets everything but the registration connection, and every webhook is stored exactly once.

#![allow(
    clippy::print_stderr,
    reason = "how long the shares took to come back, for whoever runs with --nocapture"
)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use e2e_tests::fleet::{grant, leases, wait_for_grants};
use e2e_tests::probes::{
    assert_stored_exactly, gauge, slow_inserts, wait_for_some_rows, worker_activity,
};
use e2e_tests::{QueueOptions, TestStack, eventually};
use nix::sys::signal::Signal;

/// DATABASE_CONNECTION_BUDGET of the fleet.
const BUDGET: i64 = 8;
/// What the workers share: the budget less the registration connection (one connection kept free for a worker
/// that registers).
const SHARED: f64 = (BUDGET - 1) as f64;
/// DATABASE_LEASE_SECONDS: short, so that a dead worker's share comes back quickly.
const LEASE: Duration = Duration::from_secs(4);
/// Heartbeats come every quarter of the lease.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Slack for a loaded machine on top of the protocol's own bounds.
const MARGIN: Duration = Duration::from_secs(2);
/// Time to see a grant in /metrics once the worker has it (the tests poll it).
const OBSERVE: Duration = Duration::from_millis(500);

/// Settings of every worker in these tests.
const FLEET_SETTINGS: [(&str, &str); 5] = [
    ("DATABASE_CONNECTION_BUDGET", "8"),
    ("DATABASE_MAX_CONNECTIONS", "8"),
    ("WORKER_CONCURRENCY", "8"),
    ("DATABASE_LEASE_SECONDS", "4"),
    ("SHUTDOWN_GRACE_SECONDS", "10"),
];

/// Highest values seen by the sampler.
#[derive(Debug, Default)]
struct Peaks {
    samples: u32,
    /// Most worker connections in `pg_stat_activity`.
    connections: i64,
    /// Largest sum of `granted` in the lease table.
    granted: i64,
}

/// Samples the workers' connections and the lease table every ~20 ms until `stop`.
async fn sample(stack: &TestStack, stop: &AtomicBool) -> Peaks {
    let mut peaks = Peaks::default();
    while !stop.load(Ordering::SeqCst) {
        let ((connections, _), (_, granted)) = tokio::join!(worker_activity(stack), leases(stack));
        peaks.samples += 1;
        peaks.connections = peaks.connections.max(connections);
        peaks.granted = peaks.granted.max(granted);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    peaks
}

/// Four workers share a budget of 8 while they drain a backlog into a slow database (every
/// write holds its connection): they join one by one and the shares shrink to 2, 2, 2 and 1;
/// the oldest is killed with SIGKILL and the three others take its share back within a
/// lease period; one stops gracefully and its share comes back at the next heartbeat. All
/// along, the workers never hold more than 8 connections and the lease rows never grant more
/// than 7; every webhook is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_share_one_budget_through_joins_a_kill_and_a_stop() {
    const MESSAGES: usize = 8_000;
    let options = QueueOptions {
        visibility_timeout: 5,
        ..Default::default()
    };
    let stack = TestStack::with_queues("worker-fleet", options).await;
    // 30 ms per row, 10 rows per transaction: the database is the bottleneck, so every
    // worker keeps all the connections it is granted busy.
    slow_inserts(&stack, 0.03).await;
    let ids = stack.preload(MESSAGES).await;
    let mut settings = FLEET_SETTINGS.to_vec();
    settings.extend([
        ("WORKER_BATCH_MAX_ROWS", "10"),
        ("WORKER_ADAPTIVE_CONCURRENCY", "false"),
    ]);

    let stop = AtomicBool::new(false);
    let scenario = async {
        // Joins, one at a time (each registers through the registration connection): the shares shrink.
        let first = stack.spawn_worker(&settings).await;
        wait_for_grants(&[&first], &[SHARED], Duration::from_secs(15)).await;
        wait_for_some_rows(&stack, 1).await;
        let second = stack.spawn_worker(&settings).await;
        wait_for_grants(&[&first, &second], &[3.0, 4.0], Duration::from_secs(15)).await;
        let third = stack.spawn_worker(&settings).await;
        let three = [&first, &second, &third];
        wait_for_grants(&three, &[2.0, 2.0, 3.0], Duration::from_secs(15)).await;
        let fourth = stack.spawn_worker(&settings).await;
        let all = [&first, &second, &third, &fourth];
        wait_for_grants(&all, &[1.0, 2.0, 2.0, 2.0], Duration::from_secs(15)).await;
        assert_eq!(
            grant(&fourth).await,
            1.0,
            "the newest gets the smallest share"
        );
        assert_eq!(leases(&stack).await, (4, BUDGET - 1));
        let stored = stack.stored_count().await;
        assert!(
            stored < MESSAGES as i64 / 2,
            "the backlog was mostly drained before the kill ({stored} rows); nothing was tested"
        );

        // SIGKILL of the oldest (2 connections): its row expires within three quarters of a
        // lease, and the next heartbeat of each survivor after that takes its share back
        // (3, 2, 2): within one lease period.
        first.kill().await;
        let survivors = [&second, &third, &fourth];
        let bound = LEASE + OBSERVE;
        let took = wait_for_grants(&survivors, &[2.0, 2.0, 3.0], bound).await;
        eprintln!("shares back {took:?} after the SIGKILL (lease {LEASE:?})");
        assert_eq!(leases(&stack).await, (3, BUDGET - 1));

        // A graceful stop deletes its row at exit: the two left grow at their next heartbeat,
        // long before a lease period.
        let status = second.terminate(Duration::from_secs(30)).await;
        assert!(status.success(), "{status}");
        assert_eq!(leases(&stack).await.0, 2, "the row is gone at exit");
        let took = wait_for_grants(&[&third, &fourth], &[3.0, 4.0], HEARTBEAT + MARGIN).await;
        eprintln!("shares back {took:?} after the graceful stop");

        assert_stored_exactly(&stack, &ids).await;
        stop.store(true, Ordering::SeqCst);
        (third, fourth)
    };
    let (peaks, workers) = tokio::join!(sample(&stack, &stop), scenario);
    eprintln!("{peaks:?}");
    assert!(
        peaks.connections <= BUDGET,
        "more worker connections than the budget: {peaks:?}"
    );
    assert!(
        peaks.granted < BUDGET,
        "the lease rows granted the registration connection: {peaks:?}"
    );
    assert!(
        peaks.connections >= BUDGET - 1 && peaks.samples >= 100,
        "the samples never saw the budget in use: {peaks:?}"
    );
    drop(workers);
    stack.cleanup().await;
}

/// A frozen worker (SIGSTOP) still holds its connections when its lease expires: the other
/// worker ends them as it deletes the row, and takes the whole share without the fleet ever
/// holding more than the budget. Thawed (SIGCONT), the frozen worker finds its lease lapsed,
/// gives up what it had and joins again as the newest; every webhook is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_worker_loses_its_connections_and_joins_again_when_it_thaws() {
    const MESSAGES: usize = 4_000;
    let options = QueueOptions {
        visibility_timeout: 5,
        ..Default::default()
    };
    let stack = TestStack::with_queues("worker-fleet-frozen", options).await;
    slow_inserts(&stack, 0.03).await;
    let ids = stack.preload(MESSAGES).await;
    let mut settings = FLEET_SETTINGS.to_vec();
    settings.extend([
        ("WORKER_BATCH_MAX_ROWS", "10"),
        ("WORKER_ADAPTIVE_CONCURRENCY", "false"),
    ]);

    let stop = AtomicBool::new(false);
    let scenario = async {
        let frozen = stack.spawn_worker(&settings).await;
        wait_for_grants(&[&frozen], &[SHARED], Duration::from_secs(15)).await;
        let other = stack.spawn_worker(&settings).await;
        wait_for_grants(&[&frozen, &other], &[3.0, 4.0], Duration::from_secs(15)).await;
        // Both busy: the frozen worker will hold connections when it stops.
        eventually(Duration::from_secs(15), "5 worker connections", || async {
            Ok((worker_activity(&stack).await.0 >= 5).then_some(()))
        })
        .await
        .expect("the workers use their shares");

        frozen.signal(Signal::SIGSTOP);
        let took = wait_for_grants(&[&other], &[SHARED], LEASE + OBSERVE).await;
        eprintln!("the whole share {took:?} after the SIGSTOP (lease {LEASE:?})");
        assert_eq!(leases(&stack).await, (1, BUDGET - 1));
        let stored = stack.stored_count().await;
        assert!(
            stored < MESSAGES as i64,
            "the backlog was drained before the thaw ({stored} rows); nothing was tested"
        );

        frozen.signal(Signal::SIGCONT);
        wait_for_grants(&[&frozen, &other], &[3.0, 4.0], Duration::from_secs(15)).await;
        assert_eq!(grant(&frozen).await, 3.0, "it joined again as the newest");
        // Thawed between heartbeats, it sees its lease unrenewed for a whole period; thawed
        // in the middle of one, it finds its row gone. Either way it gave up its connections.
        let log = frozen.log();
        assert!(
            log.contains("not renewed for a whole lease period")
                || log.contains("this worker's lease expired and was taken"),
            "{log}"
        );
        assert_stored_exactly(&stack, &ids).await;
        stop.store(true, Ordering::SeqCst);
        (frozen, other)
    };
    let (peaks, workers) = tokio::join!(sample(&stack, &stop), scenario);
    assert!(
        peaks.connections <= BUDGET && peaks.granted < BUDGET,
        "over the budget: {peaks:?}"
    );
    drop(workers);
    stack.cleanup().await;
}

/// A worker alone with a budget of 8 and a pool of 8 gets 7 connections (everything but the
/// registration connection), uses more than one at once, and deletes its row when it stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_worker_gets_the_budget_less_the_registration_connection() {
    const MESSAGES: usize = 2_000;
    let stack = TestStack::new("worker-fleet-alone").await;
    // 2 ms per row: batches overlap, so the adaptive limit has a reason to grow.
    slow_inserts(&stack, 0.002).await;
    let ids = stack.preload(MESSAGES).await;
    let worker = stack.spawn_worker(&FLEET_SETTINGS).await;
    wait_for_grants(&[&worker], &[SHARED], Duration::from_secs(15)).await;
    assert_eq!(leases(&stack).await, (1, BUDGET - 1));

    // The most seen of: the write limit, writes in progress, worker connections.
    let most = std::cell::Cell::new((0.0_f64, 0.0_f64, 0_i64));
    eventually(
        Duration::from_secs(60),
        "more than one write at once",
        || async {
            let (metrics, (connections, _)) =
                tokio::join!(worker.metrics(), worker_activity(&stack));
            let limit = gauge(&metrics, "webhook_worker_concurrency_limit", &[]).unwrap_or(0.0);
            let writes = gauge(&metrics, "webhook_worker_writes_in_progress", &[]).unwrap_or(0.0);
            let (l, w, c) = most.get();
            most.set((l.max(limit), w.max(writes), c.max(connections)));
            Ok((most.get().0 > 1.0 && most.get().1 > 1.0).then_some(()))
        },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}: {:?}\n{}", most.get(), worker.log()));
    let most = most.get();
    assert!(
        most.0 <= SHARED,
        "the limit stays within the grant: {most:?}"
    );
    assert!(most.2 <= BUDGET, "connections within the budget: {most:?}");

    assert_stored_exactly(&stack, &ids).await;
    let status = worker.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}");
    assert_eq!(leases(&stack).await, (0, 0), "the row is gone at exit");
    stack.cleanup().await;
}
