//! The lease: how the workers on one database agree on their shares of
//! `DATABASE_CONNECTION_BUDGET`, through the table `webhook_worker_leases` and nothing else.
//!
//! Every quarter of the lease period, a heartbeat runs one transaction under a fleet-wide
//! advisory lock: it deletes the rows whose lease expired (and ends their backends, see
//! below), reads the others, works out this worker's plan (`allocation.rs`) and writes its
//! row with `expires_at` three quarters of a lease period ahead: a dead worker's row then
//! expires at most that long after its death, and the others see it at their next heartbeat,
//! so its share is back within one lease period; a live worker may miss two heartbeats. A bigger grant reaches the gate only after
//! that commit; a smaller one is applied to the gate first (writes in progress end, idle
//! connections close) and recorded by a second heartbeat right after. The heartbeat runs on a
//! pool connection within the grant, or, while the grant is 0, on the door: one connection
//! of its own, closed right after (also when no permit comes within half a heartbeat).
//!
//! A worker that has not renewed while its row was valid (from the start of its last
//! successful heartbeat, by its own clock, which starts before the database's `now()` does)
//! lets its grant lapse, gives its connections up and registers again. A worker that dies
//! leaves a row that expires; a worker that is frozen (SIGSTOP, a stalled VM, a partition)
//! may still hold connections, so whoever deletes an expired row also ends the backends that
//! hold that worker's session lock (a shared advisory lock every pool connection takes when
//! it opens), when they run as the same role (`pg_terminate_backend` needs no superuser for
//! those). At shutdown the worker closes its pool and deletes its row, so the others grow at
//! their next heartbeat instead of after a lease period.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection as _, PgConnection};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::fleet::allocation::{self, Lease as Row, Plan};
use crate::fleet::gate::Gate;
use crate::fleet::pool::{AcquireError, Leased, LeasedPool};
use crate::fleet::table::{self, FLEET_LOCK};
use crate::metrics;

/// Longest wait for the connections in use at exit before leaving the lease to expire.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Who this worker is in the lease table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Identity {
    /// Its row's key.
    pub(crate) worker_id: uuid::Uuid,
    /// The advisory lock its pool connections hold (shared), found from its row.
    pub(crate) session_key: i64,
}

impl Identity {
    /// A random identity.
    pub(crate) fn new() -> Self {
        let worker_id = uuid::Uuid::new_v4();
        let [a, b, c, d, e, f, g, h, ..] = *worker_id.as_bytes();
        let mut session_key = i64::from_be_bytes([a, b, c, d, e, f, g, h]) & i64::MAX;
        if session_key == FLEET_LOCK {
            session_key ^= 1;
        }
        Self {
            worker_id,
            session_key,
        }
    }
}

/// The lease's settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LeaseSettings {
    /// DATABASE_CONNECTION_BUDGET.
    pub(crate) budget: u32,
    /// min(budget - 1, DATABASE_MAX_CONNECTIONS).
    pub(crate) wanted: u32,
    /// DATABASE_LEASE_SECONDS.
    pub(crate) period: Duration,
}

/// Why a heartbeat failed.
#[derive(Debug, thiserror::Error)]
enum BeatError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("the heartbeat timed out")]
    Timeout,
    /// This worker's row is gone while it holds connections: others took its share.
    #[error("this worker's lease row is gone (it expired)")]
    Lost,
}

/// A committed heartbeat.
#[derive(Debug)]
struct Beat {
    plan: Plan,
    workers: usize,
}

/// The connection one heartbeat runs on.
#[derive(Debug)]
enum Conn {
    /// A pool connection within the grant.
    Pool(Leased),
    /// The door: a connection outside every grant.
    Door(PgConnection),
}

/// The lease task of one worker.
#[derive(Debug)]
pub(crate) struct Lease {
    identity: Identity,
    settings: LeaseSettings,
    /// For the door.
    options: PgConnectOptions,
    pool: Arc<LeasedPool>,
    gate: Arc<Gate>,
}

impl Lease {
    /// The lease of `identity`, moving the gate of `pool`.
    pub(crate) fn new(
        identity: Identity,
        settings: LeaseSettings,
        options: PgConnectOptions,
        pool: Arc<LeasedPool>,
    ) -> Self {
        let gate = Arc::clone(pool.gate());
        Self {
            identity,
            settings,
            options,
            pool,
            gate,
        }
    }

    fn heartbeat_period(&self) -> Duration {
        self.settings.period / 4
    }

    /// How long a renewed row (and this worker's grant) stays valid: the lease period less
    /// one heartbeat, so that the others take a dead worker's share back within the period.
    fn validity(&self) -> Duration {
        self.settings.period - self.heartbeat_period()
    }

    /// Heartbeats until `stop`, then leaves: gives the connections up, closes the pool and
    /// deletes this worker's row.
    pub(crate) async fn run(self, stop: CancellationToken) {
        let period = self.heartbeat_period();
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        while stop.run_until_cancelled(ticks.tick()).await.is_some() {
            self.pool.close_stale().await;
            if self.gate.capacity() > 0 && self.gate.lapsed() {
                tracing::warn!(lease = ?self.settings.period, "the lease was not renewed for a whole lease period; giving up this worker's connections until it registers again");
                self.fence().await;
            }
            let mut again = true;
            while again {
                again = false;
                match self.renew().await {
                    Ok(shrunk) => {
                        failing = false;
                        // A completed shrink is recorded at once, so others may grow.
                        again = shrunk;
                    }
                    Err(BeatError::Lost) => {
                        tracing::warn!(
                            "this worker's lease expired and was taken; giving up its connections"
                        );
                        self.gate.lapse();
                        self.fence().await;
                    }
                    Err(error) if !failing => {
                        failing = true;
                        tracing::warn!(%error, "renewing the connection lease failed; retrying every heartbeat");
                    }
                    Err(error) => tracing::debug!(%error, "renewing the connection lease failed"),
                }
            }
        }
        self.leave().await;
    }

    /// One heartbeat and what follows from it; `Ok(true)` when a shrink completed (to be
    /// recorded by another heartbeat at once).
    async fn renew(&self) -> Result<bool, BeatError> {
        let started = Instant::now();
        let result = tokio::time::timeout(self.heartbeat_period(), self.beat())
            .await
            .unwrap_or(Err(BeatError::Timeout));
        metrics::record_lease_renewal(result.is_ok());
        let beat = result?;
        self.gate.renew(started + self.validity());
        metrics::gauge_fleet_workers(beat.workers);
        let Plan { target, record } = beat.plan;
        let (target, record) = (target as usize, record as usize);
        let capacity = self.gate.capacity();
        let from = self.gate.grant();
        // Grow only after the commit above, and never past the target: a record above it
        // only covers connections still to be closed.
        let grow_to = record.min(target);
        if grow_to > capacity {
            self.gate.set(grow_to, Duration::ZERO).await;
            tracing::info!(
                from,
                to = grow_to,
                workers = beat.workers,
                "connection grant raised"
            );
            return Ok(false);
        }
        let goal = target.min(capacity);
        if goal == capacity && self.pool.size() <= capacity {
            return Ok(false);
        }
        let shrunk =
            self.gate.set(goal, self.heartbeat_period()).await && self.pool.trim(goal).await;
        if from != goal {
            tracing::info!(
                from,
                to = goal,
                workers = beat.workers,
                done = shrunk,
                "connection grant lowered"
            );
        }
        // The row still says `record`: say `goal` now, so that the others may grow.
        Ok(shrunk && record > goal)
    }

    /// Gives every connection up (waiting up to a lease period for the writes in progress).
    async fn fence(&self) {
        self.gate.set(0, self.settings.period).await;
        self.pool.trim(0).await;
    }

    /// One heartbeat transaction, on a pool connection within the grant or on the door.
    async fn beat(&self) -> Result<Beat, BeatError> {
        let mut conn = self.connection().await?;
        let result = match &mut conn {
            Conn::Pool(pooled) => self.transaction(pooled).await,
            Conn::Door(door) => self.transaction(door).await,
        };
        match conn {
            Conn::Pool(pooled) => pooled.release(result.is_ok()).await,
            Conn::Door(door) => {
                let _ = door.close().await;
            }
        }
        result
    }

    /// A pool connection if a permit comes within half a heartbeat period, else the door.
    async fn connection(&self) -> Result<Conn, sqlx::Error> {
        if self.gate.grant() > 0 {
            let wait = self.heartbeat_period() / 2;
            if let Ok(Ok(permit)) = tokio::time::timeout(wait, self.gate.acquire()).await {
                return match self.pool.acquire_with(permit).await {
                    Ok(pooled) => Ok(Conn::Pool(pooled)),
                    Err(AcquireError::Connect(error)) => Err(error),
                    Err(AcquireError::Lapsed(_)) => unreachable!("the permit is held"),
                };
            }
        }
        Ok(Conn::Door(PgConnection::connect_with(&self.options).await?))
    }

    /// The heartbeat's transaction, under the fleet's lock: expired rows out, this worker's
    /// plan, its row renewed.
    async fn transaction(&self, conn: &mut PgConnection) -> Result<Beat, BeatError> {
        let mut tx = conn.begin().await?;
        let (now, expired) = table::lock_and_expire(&mut tx).await?;
        if !expired.is_empty() {
            let keys: Vec<i64> = expired.iter().map(|(_, key)| *key).collect();
            let ended = table::end_backends(&mut tx, &keys).await?;
            let workers: Vec<&str> = expired.iter().map(|(id, _)| id.as_str()).collect();
            tracing::info!(?workers, backends_ended = ended, "removed expired leases");
        }
        let mut rows = table::read(&mut tx).await?;
        let id = self.identity.worker_id.to_string();
        let me = match rows.iter().position(|row| row.worker_id == id) {
            Some(me) => me,
            None if self.gate.capacity() > 0 => return Err(BeatError::Lost),
            None => {
                rows.push(Row {
                    worker_id: id,
                    granted: 0,
                    wanted: self.settings.wanted,
                    budget: self.settings.budget,
                    started_at: now,
                });
                rows.len() - 1
            }
        };
        let held = self.gate.capacity().max(self.pool.size());
        let plan = allocation::plan(&rows, me, u32::try_from(held).unwrap_or(u32::MAX));
        let row = Row {
            granted: plan.record,
            ..rows[me].clone()
        };
        table::write(&mut tx, &row, self.identity.session_key, self.validity()).await?;
        tx.commit().await?;
        Ok(Beat {
            plan,
            workers: rows.len(),
        })
    }

    /// Closes the connections and deletes this worker's row, unless connections are still
    /// busy (writes aborted at the end of the grace period): then the row is left to expire.
    async fn leave(&self) {
        self.gate.lapse();
        let drained = self.gate.set(0, LEAVE_TIMEOUT).await;
        if !(drained && self.pool.trim(0).await) {
            tracing::warn!(lease = ?self.settings.period, "connections still busy at exit; leaving the lease to expire");
            return;
        }
        let deleted = async {
            let mut door = PgConnection::connect_with(&self.options).await?;
            table::delete(&mut door, self.identity.worker_id).await?;
            door.close().await
        };
        match tokio::time::timeout(LEAVE_TIMEOUT, deleted).await {
            Ok(Ok(())) => tracing::info!("connection lease released"),
            Ok(Err(error)) => {
                tracing::warn!(%error, "releasing the connection lease failed; it will expire");
            }
            Err(_) => tracing::warn!("releasing the connection lease timed out; it will expire"),
        }
    }
}
