//! The lease's timing rules on an in-memory table (`fleet/testing.rs`), in paused time: it
//! lapses when heartbeats fail past the row's validity and registers again, a hung call is
//! cut at its step's deadline, the share follows the live rows, a busy fleet lock keeps the
//! grant, and stopping deletes the row.

use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout};

use super::*;
use crate::fleet::testing::{FakeTable, Fault};

/// The lease period: heartbeats every 2 s, rows and grants valid for 6 s, steps of 1 s.
const PERIOD: Duration = Duration::from_secs(8);
/// The deadline of each step of a heartbeat at [`PERIOD`].
const STEP: Duration = Duration::from_secs(1);
/// Another worker's row key.
const OTHER: &str = "00000000-0000-4000-8000-000000000001";

/// A lease on a fake table, for a budget of 8 wanting 7, with the table and the gate.
fn lease() -> (Lease<FakeTable>, FakeTable, Arc<Gate>) {
    let identity = Identity::new();
    let gate = Arc::new(Gate::leased());
    // Never connects: the fake table hands out the heartbeat's connections.
    let pool = Arc::new(LeasedPool::new(
        PgConnectOptions::new(),
        None,
        STEP,
        Arc::clone(&gate),
    ));
    let table = FakeTable::new(identity, PERIOD);
    let settings = LeaseSettings {
        budget: 8,
        wanted: 7,
        period: PERIOD,
    };
    let lease = Lease::with_table(identity, settings, table.clone(), pool);
    (lease, table, gate)
}

/// Runs `lease` until the token is cancelled (its first heartbeat at once).
fn run(lease: Lease<FakeTable>) -> (CancellationToken, JoinHandle<()>) {
    let stop = CancellationToken::new();
    (stop.clone(), tokio::spawn(lease.run(stop)))
}

/// Waits until `millis` after `start` (heartbeats come at every even second).
async fn at(start: Instant, millis: u64) {
    sleep_until(start + Duration::from_millis(millis)).await;
}

/// This worker's granted connections in the table.
fn recorded(table: &FakeTable) -> Option<u32> {
    table.row(table.me()).map(|row| row.granted)
}

#[tokio::test(start_paused = true)]
async fn failing_heartbeats_lapse_the_grant_when_the_row_expires_and_a_success_registers_again() {
    let (lease, table, gate) = lease();
    let start = Instant::now();
    let (stop, task) = run(lease);
    at(start, 1_000).await;
    assert_eq!((gate.grant(), recorded(&table)), (7, Some(7)), "alone");
    table.set_fault(Fault::Fail);
    // The heartbeats at 2 s and 4 s fail; the renewal at 0 s stands until 6 s.
    at(start, 5_900).await;
    assert!(!gate.lapsed());
    assert_eq!(gate.grant(), 7);
    // The heartbeat at 6 s finds the grant lapsed: it gives the connections up, then tries
    // to register (and fails, as at 8 s).
    at(start, 6_100).await;
    assert!(gate.lapsed(), "not renewed within the row's validity");
    assert!(gate.acquire().await.is_err());
    assert_eq!((gate.grant(), gate.capacity()), (0, 0), "fenced");
    at(start, 9_000).await;
    assert_eq!((gate.grant(), gate.capacity()), (0, 0), "still fenced");
    table.set_fault(Fault::None);
    // At 10 s it registers again (its old row expired) and gets its share back.
    at(start, 11_000).await;
    assert_eq!((gate.grant(), recorded(&table)), (7, Some(7)));
    assert!(!gate.lapsed());
    stop.cancel();
    task.await.expect("the lease ends");
}

#[tokio::test(start_paused = true)]
async fn a_hung_call_is_cut_at_the_deadline_of_its_step() {
    let (lease, table, gate) = lease();
    // Registering: opening the registration connection hangs.
    table.set_fault(Fault::HangConnecting);
    let started = Instant::now();
    let result = timeout(10 * PERIOD, lease.renew()).await;
    let result = result.expect("cut by the heartbeat's own deadline");
    assert!(matches!(result, Err(BeatError::Timeout(_))), "{result:?}");
    assert_eq!(started.elapsed(), STEP);
    assert_eq!(gate.grant(), 0);
    table.set_fault(Fault::None);
    let renewed = lease.renew().await.expect("registered");
    assert_eq!((renewed, gate.grant()), (Renewed::Planned, 7));
    let valid_until = gate.valid_until();
    // With a grant: the transaction hangs on a connection of the grant.
    table.set_fault(Fault::HangTransaction);
    let started = Instant::now();
    let result = timeout(10 * PERIOD, lease.renew()).await;
    let result = result.expect("cut by the heartbeat's own deadline");
    assert!(matches!(result, Err(BeatError::Timeout(_))), "{result:?}");
    assert_eq!(started.elapsed(), STEP);
    assert_eq!(gate.valid_until(), valid_until, "not renewed");
    // The heartbeat's connection was dropped: all 7 permits are free.
    let mut permits = Vec::new();
    for _ in 0..7 {
        let permit = timeout(STEP, gate.acquire()).await;
        permits.push(permit.expect("free").expect("valid"));
    }
}

#[tokio::test(start_paused = true)]
async fn heartbeats_that_hang_count_as_failed_and_the_grant_lapses() {
    let (lease, table, gate) = lease();
    let start = Instant::now();
    let (stop, task) = run(lease);
    at(start, 1_000).await;
    assert_eq!(gate.grant(), 7);
    table.set_fault(Fault::HangTransaction);
    // Each heartbeat (2, 4 s) is cut a step later, and the next one still comes.
    at(start, 5_500).await;
    assert_eq!(table.plans(), 3, "one transaction per heartbeat");
    assert_eq!(gate.grant(), 7);
    // At 6 s the grant has lapsed: fenced, then registering hangs too (cut at 7 s, 9 s).
    at(start, 6_500).await;
    assert!(gate.lapsed());
    assert_eq!((gate.grant(), gate.capacity(), table.plans()), (0, 0, 4));
    at(start, 9_500).await;
    assert_eq!((gate.grant(), table.plans()), (0, 5));
    table.set_fault(Fault::None);
    at(start, 10_500).await;
    assert_eq!(gate.grant(), 7, "registered again");
    stop.cancel();
    task.await.expect("the lease ends");
}

#[tokio::test(start_paused = true)]
async fn the_share_follows_the_live_leases_as_workers_come_and_go() {
    let (lease, table, gate) = lease();
    let start = Instant::now();
    let (stop, task) = run(lease);
    at(start, 1_000).await;
    assert_eq!(gate.grant(), 7);
    // Another worker registers (later, so the remainder stays here); its row expires at
    // 5.5 s, as if it died.
    table.join(OTHER, 0, 7, 8, Duration::from_millis(4_500));
    // At 2 s: shrunk to its share of 7 at once, and recorded right after.
    at(start, 3_000).await;
    assert_eq!(
        (gate.grant(), gate.capacity(), recorded(&table)),
        (4, 4, Some(4))
    );
    // The other grows into the room; nothing changes here.
    table.set_granted(OTHER, 3);
    at(start, 5_000).await;
    assert_eq!((gate.grant(), recorded(&table)), (4, Some(4)));
    // At 6 s its row has expired: everything is this worker's again.
    at(start, 7_000).await;
    assert!(table.row(OTHER).is_none(), "deleted as expired");
    assert_eq!((gate.grant(), recorded(&table)), (7, Some(7)));
    stop.cancel();
    task.await.expect("the lease ends");
}

#[tokio::test(start_paused = true)]
async fn a_busy_fleet_lock_renews_the_own_row_and_keeps_the_grant() {
    let (lease, table, gate) = lease();
    let start = Instant::now();
    let (stop, task) = run(lease);
    at(start, 1_000).await;
    assert_eq!(gate.grant(), 7);
    table.set_fault(Fault::LockBusy);
    table.join(OTHER, 0, 7, 8, Duration::from_secs(3_600));
    // Well past the validity of the last planned renewal (6 s): kept, and the row with it.
    at(start, 13_000).await;
    assert_eq!((gate.grant(), gate.lapsed()), (7, false), "kept");
    let expires = table.expires(table.me()).expect("own row");
    assert!(expires > Instant::now(), "renewed");
    assert_eq!(
        recorded(&table),
        Some(7),
        "nothing planned while the lock is busy"
    );
    // Its row is gone (expired and taken) while it holds connections: fenced at 14 s.
    table.remove(table.me());
    at(start, 15_000).await;
    assert_eq!((gate.grant(), gate.capacity()), (0, 0), "lost");
    // Without a row it cannot register until the lock is free (16 s), then shares.
    at(start, 17_000).await;
    assert_eq!(gate.grant(), 0);
    table.set_fault(Fault::None);
    at(start, 19_000).await;
    assert_eq!((gate.grant(), recorded(&table)), (3, Some(3)));
    stop.cancel();
    task.await.expect("the lease ends");
}

#[tokio::test(start_paused = true)]
async fn stopping_gives_the_connections_up_and_deletes_the_row() {
    let (lease, table, gate) = lease();
    let start = Instant::now();
    let (stop, task) = run(lease);
    at(start, 1_000).await;
    assert_eq!(recorded(&table), Some(7));
    stop.cancel();
    task.await.expect("the lease ends");
    assert_eq!((gate.grant(), gate.capacity()), (0, 0));
    assert!(gate.lapsed());
    assert!(table.left() && recorded(&table).is_none(), "row deleted");
}

#[tokio::test(start_paused = true)]
async fn a_busy_connection_or_a_hung_departure_leaves_the_row_to_expire() {
    // A write still holds its connection at exit: the row stays, to expire.
    let (lease, table, gate) = lease();
    let start = Instant::now();
    let (stop, task) = run(lease);
    at(start, 1_000).await;
    let write = gate.acquire().await.expect("granted");
    stop.cancel();
    timeout(PERIOD, task)
        .await
        .expect("gives up on the write")
        .expect("the lease ends");
    assert!(!table.left() && recorded(&table).is_some(), "row left");
    drop(write);
    // The departure hangs: cut, the row left to expire.
    let (lease, table, _gate) = self::lease();
    let start = Instant::now();
    let (stop, task) = run(lease);
    at(start, 1_000).await;
    assert_eq!(recorded(&table), Some(7));
    table.set_fault(Fault::HangTransaction);
    stop.cancel();
    timeout(PERIOD, task)
        .await
        .expect("cut by the departure's deadline")
        .expect("the lease ends");
    assert!(!table.left() && recorded(&table).is_some(), "row left");
}
