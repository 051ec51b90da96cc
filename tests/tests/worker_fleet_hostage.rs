//! The fleet's lease cannot be held hostage, against real LocalStack and PostgreSQL: a
//! session that is not a worker takes the fleet's advisory lock inside a transaction and then
//! does nothing (an operator's psql left open, a frozen client) for three lease periods,
//! while two workers drain a backlog into a database so slow that every write holds its
//! connection longer than half a heartbeat. The workers keep their grants and keep storing,
//! no worker backend waits on the lock for longer than a moment (the wait is ended by the
//! server, not left behind), the workers hold no connection beyond their grants (no
//! heartbeat needs the registration connection), and once the lock is free they renew under it again. And a
//! worker frozen (SIGSTOP) inside its own heartbeat transaction loses the lock to PostgreSQL
//! well within a lease period, while the other worker never lapses.

#![allow(
    clippy::print_stderr,
    reason = "what the sampler saw, for whoever runs with --nocapture"
)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use e2e_tests::fleet::{FLEET_LOCK, advisory_waits, grants, leases, wait_for_grants};
use e2e_tests::probes::{
    assert_stored_exactly, gauge, slow_inserts, wait_for_some_rows, worker_activity,
};
use e2e_tests::{QueueOptions, Service, TestStack, eventually};
use nix::sys::signal::Signal;

/// DATABASE_CONNECTION_BUDGET of the fleet.
const BUDGET: i64 = 8;
/// DATABASE_LEASE_SECONDS.
const LEASE: Duration = Duration::from_secs(4);
/// How long the outside session holds the fleet's lock: three lease periods.
const HOLD: Duration = Duration::from_secs(12);
/// Longest a worker backend may be seen waiting on the lock: its lock timeout is a twentieth
/// of the lease (200 ms); a wait left behind by a client-side timeout would last the whole
/// hold.
const LONGEST_WAIT: f64 = 1.0;

/// Settings of both workers: 10 rows of 80 ms each make every write last 800 ms, more than
/// half a heartbeat (500 ms), so a heartbeat never finds a connection idle.
const SETTINGS: [(&str, &str); 7] = [
    ("DATABASE_CONNECTION_BUDGET", "8"),
    ("DATABASE_MAX_CONNECTIONS", "8"),
    ("WORKER_CONCURRENCY", "8"),
    ("DATABASE_LEASE_SECONDS", "4"),
    ("SHUTDOWN_GRACE_SECONDS", "10"),
    ("WORKER_BATCH_MAX_ROWS", "10"),
    ("WORKER_ADAPTIVE_CONCURRENCY", "false"),
];

/// A counter of a worker's /metrics (summed over the samples matching `filters`); 0 before it
/// is first counted.
async fn counter(worker: &Service, name: &str, filters: &[&str]) -> f64 {
    gauge(&worker.metrics().await, name, filters).unwrap_or(0.0)
}

/// Rows a worker stored.
async fn stored(worker: &Service) -> f64 {
    counter(
        worker,
        "webhook_worker_messages_total",
        &[r#"outcome="stored""#],
    )
    .await
}

/// Lease heartbeats of a worker that ended with `result`.
async fn renewals(worker: &Service, result: &str) -> f64 {
    counter(
        worker,
        "webhook_worker_lease_renewals_total",
        &[&format!(r#"result="{result}""#)],
    )
    .await
}

/// What the sampler saw.
#[derive(Debug, Default)]
struct Seen {
    samples: u32,
    /// Most worker connections in `pg_stat_activity`.
    connections: i64,
    /// Most worker backends waiting on an advisory lock at once.
    waiting: i64,
    /// Longest wait on an advisory lock, in seconds.
    longest_wait: f64,
    /// Lowest grant of either worker.
    lowest_grant: f64,
}

/// Samples connections, advisory-lock waits and grants every ~20 ms until `stop`.
async fn sample(stack: &TestStack, workers: &[&Service], stop: &AtomicBool) -> Seen {
    let mut seen = Seen {
        lowest_grant: f64::MAX,
        ..Seen::default()
    };
    while !stop.load(Ordering::SeqCst) {
        let ((connections, _), (waiting, longest), grants) = tokio::join!(
            worker_activity(stack),
            advisory_waits(stack),
            grants(workers)
        );
        seen.samples += 1;
        seen.connections = seen.connections.max(connections);
        seen.waiting = seen.waiting.max(waiting);
        seen.longest_wait = seen.longest_wait.max(longest);
        seen.lowest_grant = seen.lowest_grant.min(grants[0]);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seen
}

/// Two busy workers while an outside session holds the fleet's lock for three lease periods:
/// no lapse, no write stops, no wait left behind on the server, never over the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_lock_holder_cannot_make_the_workers_lapse() {
    const MESSAGES: usize = 3_000;
    let options = QueueOptions {
        visibility_timeout: 10,
        ..Default::default()
    };
    let stack = TestStack::with_queues("worker-fleet-hostage", options).await;
    slow_inserts(&stack, 0.08).await;
    let ids = stack.preload(MESSAGES).await;
    let first = stack.spawn_worker(&SETTINGS).await;
    wait_for_grants(&[&first], &[7.0], Duration::from_secs(15)).await;
    let second = stack.spawn_worker(&SETTINGS).await;
    let workers = [&first, &second];
    wait_for_grants(&workers, &[3.0, 4.0], Duration::from_secs(15)).await;
    wait_for_some_rows(&stack, 1).await;

    // The hostage taker: a transaction that takes the fleet's lock and then does nothing.
    let mut holder = stack.db.begin().await.expect("BEGIN");
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(FLEET_LOCK)
        .execute(&mut *holder)
        .await
        .expect("taking the fleet's lock");
    let held_at = tokio::time::Instant::now();
    let kept_before = [
        renewals(&first, "kept").await,
        renewals(&second, "kept").await,
    ];

    let stop = AtomicBool::new(false);
    let scenario = async {
        // The last lease period of the hold: both workers still store.
        tokio::time::sleep(HOLD - LEASE).await;
        let before = [stored(&first).await, stored(&second).await];
        tokio::time::sleep_until(held_at + HOLD).await;
        let after = [stored(&first).await, stored(&second).await];
        stop.store(true, Ordering::SeqCst);
        (before, after)
    };
    let (seen, (before, after)) = tokio::join!(sample(&stack, &workers, &stop), scenario);
    let failed = [
        renewals(&first, "failed").await,
        renewals(&second, "failed").await,
    ];
    eprintln!("while held: {seen:?}; stored {before:?} -> {after:?}; failed renewals {failed:?}");
    let logs = || format!("{}\n----\n{}", first.log(), second.log());
    assert!(seen.samples >= 100, "too few samples: {seen:?}");
    assert!(
        seen.lowest_grant >= 3.0,
        "a worker's grant fell while the lock was held: {seen:?}\n{}",
        logs()
    );
    assert!(
        after[0] > before[0] && after[1] > before[1],
        "a worker stopped storing during the last lease period of the hold: {before:?} -> {after:?}\n{}",
        logs()
    );
    assert!(
        seen.waiting <= 2 && seen.longest_wait < LONGEST_WAIT,
        "worker backends were left waiting on the fleet's lock: {seen:?}"
    );
    // Nobody registers while the lock is held, so the registration connection stays unused: a heartbeat that
    // left its grant for it (or a wait left behind) would show as an eighth connection.
    assert!(
        seen.connections < BUDGET,
        "more worker connections than the grants (7 of the budget of 8): {seen:?}"
    );
    for (worker, kept) in workers.iter().zip(kept_before) {
        assert!(
            renewals(worker, "kept").await > kept,
            "the heartbeats never found the lock busy: nothing was tested\n{}",
            worker.log()
        );
    }
    assert_eq!(leases(&stack).await, (2, 7), "the rows as they were");

    // The lock is free again: nothing waits on it and the heartbeats take it again.
    holder.rollback().await.expect("ROLLBACK");
    let ok_before = [renewals(&first, "ok").await, renewals(&second, "ok").await];
    eventually(LEASE, "heartbeats under the lock again", || async {
        let ok = [renewals(&first, "ok").await, renewals(&second, "ok").await];
        Ok((ok[0] > ok_before[0] && ok[1] > ok_before[1]).then_some(()))
    })
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", logs()));
    assert_eq!(advisory_waits(&stack).await.0, 0, "a wait left behind");
    assert_eq!(grants(&workers).await, [3.0, 4.0]);

    assert_stored_exactly(&stack, &ids).await;
    drop((first, second));
    stack.cleanup().await;
}

/// The id a worker logged at start (`worker_id="…"`).
fn worker_id(worker: &Service) -> String {
    let log = worker.log();
    let (_, rest) = log
        .split_once("worker_id=\"")
        .unwrap_or_else(|| panic!("no worker_id in the log:\n{log}"));
    rest.split('"').next().unwrap_or_default().to_owned()
}

/// The backend holding the fleet's lock and the worker it belongs to (by the session lock
/// of its pool connections), if a worker holds it.
async fn lock_holder(stack: &TestStack) -> Option<(i32, String)> {
    sqlx::query_as(
        "SELECT fleet.pid, lease.worker_id::text
         FROM pg_locks fleet
         JOIN pg_locks session ON session.pid = fleet.pid AND session.locktype = 'advisory'
              AND session.objsubid = 1 AND session.granted
         JOIN webhook_worker_leases lease
              ON lease.session_key = ((session.classid::int8 << 32) | session.objid::int8)
         WHERE fleet.locktype = 'advisory' AND fleet.objsubid = 1 AND fleet.granted
           AND ((fleet.classid::int8 << 32) | fleet.objid::int8) = $1",
    )
    .bind(FLEET_LOCK)
    .fetch_optional(&stack.db)
    .await
    .expect("reading pg_locks")
}

/// Whether backend `pid` still exists.
async fn backend_alive(stack: &TestStack, pid: i32) -> bool {
    sqlx::query_scalar("SELECT count(*) > 0 FROM pg_stat_activity WHERE pid = $1")
        .bind(pid)
        .fetch_one(&stack.db)
        .await
        .expect("reading pg_stat_activity")
}

/// A worker frozen (SIGSTOP) inside its heartbeat transaction, the fleet's lock held, loses
/// it to PostgreSQL itself (the statement in progress ends, then the idle transaction is
/// ended: P/5 at most): the lock is free long before a lease period, the other worker never
/// lapses and takes the whole share once the frozen worker's row expires; thawed, the frozen
/// worker joins again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_frozen_inside_its_heartbeat_loses_the_fleet_lock() {
    let stack = TestStack::new("worker-fleet-frozen-holder").await;
    // Every lease row written sleeps 200 ms under the lock: a window to freeze a worker in.
    for statement in [
        "CREATE FUNCTION slow_lease() RETURNS trigger LANGUAGE plpgsql
         AS $$ BEGIN PERFORM pg_sleep(0.2); RETURN NEW; END $$",
        "CREATE TRIGGER slow_lease BEFORE INSERT ON webhook_worker_leases
         FOR EACH ROW EXECUTE FUNCTION slow_lease()",
    ] {
        sqlx::query(statement)
            .execute(&stack.db)
            .await
            .expect("creating the slow-lease trigger");
    }
    let first = stack.spawn_worker(&SETTINGS).await;
    wait_for_grants(&[&first], &[7.0], Duration::from_secs(15)).await;
    let second = stack.spawn_worker(&SETTINGS).await;
    wait_for_grants(&[&first, &second], &[3.0, 4.0], Duration::from_secs(15)).await;
    let ids = [worker_id(&first), worker_id(&second)];

    // Freeze whichever worker is seen holding the lock; retry if it let go before the signal.
    let mut frozen = None;
    for _ in 0..20 {
        let holder = eventually(LEASE, "a worker holding the fleet's lock", || async {
            Ok(lock_holder(&stack).await)
        })
        .await
        .expect("the heartbeats take the lock");
        let Some(index) = ids.iter().position(|id| *id == holder.1) else {
            continue;
        };
        let worker = [&first, &second][index];
        worker.signal(Signal::SIGSTOP);
        if lock_holder(&stack)
            .await
            .is_some_and(|now| now.0 == holder.0)
        {
            frozen = Some((index, holder.0, tokio::time::Instant::now()));
            break;
        }
        worker.signal(Signal::SIGCONT);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (index, pid, frozen_at) = frozen.expect("froze a worker inside its heartbeat");
    let (frozen, other) = if index == 0 {
        (&first, &second)
    } else {
        (&second, &first)
    };
    let other_grant = grants(&[other]).await[0];

    // PostgreSQL ends the frozen worker's session: P/5 (800 ms) after the freeze at most.
    eventually(
        LEASE / 2,
        "the frozen heartbeat's backend ended",
        || async { Ok((!backend_alive(&stack, pid).await).then_some(())) },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", frozen.log()));
    eprintln!(
        "the lock was free {:?} after the freeze",
        frozen_at.elapsed()
    );
    assert!(
        lock_holder(&stack)
            .await
            .is_none_or(|holder| holder.0 != pid),
        "the frozen worker still holds the lock"
    );

    // The other worker never lapses and takes everything once the frozen row expires.
    let most = eventually(LEASE * 3, "the whole share", || async {
        let grant = grants(&[other]).await[0];
        assert!(
            grant >= other_grant,
            "the other worker's grant fell to {grant}"
        );
        Ok((grant == 7.0).then_some(()))
    })
    .await;
    most.unwrap_or_else(|error| panic!("{error}\n{}", other.log()));
    assert_eq!(leases(&stack).await, (1, 7));

    frozen.signal(Signal::SIGCONT);
    wait_for_grants(&[&first, &second], &[3.0, 4.0], Duration::from_secs(15)).await;
    drop((first, second));
    stack.cleanup().await;
}
