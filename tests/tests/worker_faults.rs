//! Production faults under steady load (issue 18), end to end against PostgreSQL and
//! LocalStack: connections that go silent while new ones work, the worker's login revoked,
//! a lock held on the table, and a SIGTERM while the database and SQS are both silent. Every
//! one ends in a pause and a recovery: every webhook stored exactly once, nothing in the DLQ,
//! and the worker gone within its grace period and margin.

use std::time::{Duration, Instant};

use e2e_tests::fault_proxy::{Fault, FaultProxy};
use e2e_tests::pg_proxy::PgProxy;
use e2e_tests::probes::{assert_stored_exactly, lock_table, wait_for_some_rows};
use e2e_tests::queues::sqs_endpoint;
use e2e_tests::report::counter;
use e2e_tests::worker_role::with_user;
use e2e_tests::{Service, TestStack};
use webhook_shared::envelope::Envelope;

/// Webhooks per second of the steady load.
const RATE: usize = 20;

/// Sends `RATE` webhooks a second (two batches of `RATE / 2`) for `duration`; returns their
/// ids.
async fn steady_load(stack: &TestStack, duration: Duration) -> Vec<String> {
    let mut ids = Vec::new();
    let started = tokio::time::Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_millis(500));
    while started.elapsed() < duration {
        ticks.tick().await;
        let envelopes = TestStack::envelopes("steady", RATE / 2);
        stack
            .send_raw(
                &stack.queue_url,
                envelopes.iter().map(Envelope::to_json).collect(),
            )
            .await;
        ids.extend(envelopes.into_iter().map(|e| e.id));
    }
    ids
}

/// The worker's count of circuit openings for `reason`.
async fn circuit_opens(worker: &Service, reason: &str) -> f64 {
    let metrics = worker.metrics().await;
    counter(
        &metrics,
        "webhook_worker_circuit_opens_total",
        &[&format!(r#"reason="{reason}""#)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_go_silent_while_new_ones_work_pause_the_worker_and_it_recovers() {
    let stack = TestStack::new("silent-db").await;
    let proxy = PgProxy::start(&stack.database_url).await;
    let worker = stack.spawn_worker(&[("DATABASE_URL", proxy.url())]).await;
    let (ids, silenced) = tokio::join!(steady_load(&stack, Duration::from_secs(20)), async {
        wait_for_some_rows(&stack, 20).await;
        proxy.silence()
    });
    assert!(silenced > 0, "the worker had connections open");
    assert_stored_exactly(&stack, &ids).await;
    assert!(
        circuit_opens(&worker, "unreachable").await >= 1.0,
        "a deadline fired and opened the circuit:\n{}",
        worker.log()
    );
    drop(worker);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_login_pauses_the_worker_and_sends_nothing_to_the_dlq() {
    let stack = TestStack::new("revoked-login").await;
    let role = stack.create_worker_role().await.expect("the worker's role");
    let url = with_user(&stack.database_url, &role).expect("a database URL");
    let worker = stack.spawn_worker(&[("DATABASE_URL", url.as_str())]).await;
    let (ids, ()) = tokio::join!(steady_load(&stack, Duration::from_secs(30)), async {
        wait_for_some_rows(&stack, 20).await;
        // A rotated password or a revoked grant: every connect fails with 28000/28P01.
        stack.revoke_login(&role).await.expect("NOLOGIN");
        tokio::time::sleep(Duration::from_secs(15)).await;
        stack.restore_login(&role).await.expect("LOGIN");
    });
    assert_stored_exactly(&stack, &ids).await;
    assert!(
        circuit_opens(&worker, "unreachable").await >= 1.0,
        "{}",
        worker.log()
    );
    drop(worker);
    let db = stack.db.clone();
    stack.cleanup().await;
    // The grants went with the database.
    let _ = sqlx::query(&format!(r#"DROP ROLE IF EXISTS "{role}""#))
        .execute(&db)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_on_the_table_pauses_the_worker_and_it_recovers() {
    let stack = TestStack::new("table-lock").await;
    let worker = stack.spawn_worker(&[]).await;
    let (ids, ()) = tokio::join!(steady_load(&stack, Duration::from_secs(25)), async {
        wait_for_some_rows(&stack, 20).await;
        let lock = lock_table(&stack).await;
        tokio::time::sleep(Duration::from_secs(15)).await;
        lock.rollback().await.expect("ROLLBACK releases the lock");
    });
    assert_stored_exactly(&stack, &ids).await;
    assert!(
        circuit_opens(&worker, "systemic").await >= 1.0,
        "lock_timeout fired and paused the worker:\n{}",
        worker.log()
    );
    drop(worker);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_the_database_and_sqs_silent_exits_within_the_grace_and_its_margin() {
    let stack = TestStack::new("silent-exit").await;
    let database = PgProxy::start(&stack.database_url).await;
    let sqs = FaultProxy::start(&sqs_endpoint()).await;
    let sqs_url = sqs.url();
    let worker = stack
        .spawn_worker(&[
            ("DATABASE_URL", database.url()),
            ("AWS_ENDPOINT_URL", sqs_url.as_str()),
            ("SHUTDOWN_GRACE_SECONDS", "5"),
        ])
        .await;
    stack.preload(200).await;
    wait_for_some_rows(&stack, 20).await;
    database.silence();
    sqs.set(Fault::Freeze);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    worker.signal(nix::sys::signal::Signal::SIGTERM);
    let status = worker.wait(Duration::from_secs(30)).await;
    let took = started.elapsed();
    // Grace 5 s + the worker's 12 s margin, + 2 s for the process itself.
    assert!(
        took <= Duration::from_secs(19),
        "exited after {took:?} ({status:?})"
    );
    sqs.set(Fault::None);
    stack.cleanup().await;
}
