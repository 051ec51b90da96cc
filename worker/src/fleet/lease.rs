//! The lease: how the workers on one database agree on their shares of
//! `DATABASE_CONNECTION_BUDGET`, through the table `webhook_worker_leases` and nothing else.
//!
//! Every quarter of the lease period, a heartbeat (`beat.rs`) runs one transaction under a
//! fleet-wide advisory lock: it deletes the rows whose lease expired (and ends their
//! backends, see below), reads the others, works out this worker's plan (`allocation.rs`) and
//! writes its row with `expires_at` three quarters of a lease period ahead: a dead worker's
//! row then expires at most that long after its death, and the others see it at their next
//! heartbeat, so its share is back within one lease period; a live worker may miss two
//! heartbeats. A bigger grant reaches the gate only after that commit; a smaller one is
//! applied to the gate first (writes in progress end, idle connections close) and recorded
//! by a second heartbeat right after. The heartbeat runs on a connection of the grant, taken
//! ahead of the writes, or, while the grant is 0, on the registration connection: one
//! connection outside every grant, opened for that heartbeat and closed right after.
//!
//! The lease talks to its table through [`LeaseTable`] (`lease_table.rs`): PostgreSQL's in
//! `pg_table.rs`, an in-memory one in the tests (`lease_tests.rs`).
//!
//! The lease cannot be held hostage. Every step of a heartbeat, and the departure, has a
//! deadline, and every transaction of the lease sets its own `lock_timeout`,
//! `statement_timeout` and `idle_in_transaction_session_timeout`, so PostgreSQL itself ends a
//! wait for the lock, and ends the session of a worker frozen while it holds the lock; when
//! the lock stays busy anyway (a session that is not a worker holds it), each worker renews
//! its own row without it and keeps its grant (see `beat.rs`, and `timing.rs` for the
//! figures).
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
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::fleet::allocation::Plan;
use crate::fleet::beat::{Beat, Heartbeat};
use crate::fleet::gate::Gate;
use crate::fleet::lease_table::{BeatError, Identity, LeaseTable};
use crate::fleet::pg_table::PgLeaseTable;
use crate::fleet::pool::LeasedPool;
use crate::fleet::timing::Timing;
use crate::metrics::{self, LeaseRenewal};

/// Longest wait for the connections in use at exit before leaving the lease to expire.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);

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

/// What a successful heartbeat did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Renewed {
    /// Renewed under the fleet's lock, the grant moved to the plan.
    Planned,
    /// As `Planned`, and a shrink completed that the row does not say yet: heartbeat again.
    Shrunk,
    /// The fleet's lock was busy: this worker's own row renewed, its grant kept.
    Kept,
}

/// The lease task of one worker, on the lease table `T` (PostgreSQL's, but for tests).
#[derive(Debug)]
pub(crate) struct Lease<T = PgLeaseTable> {
    /// This worker in the lease table.
    identity: Identity,
    /// The budget, the connections wanted, the lease period.
    settings: LeaseSettings,
    /// Intervals, deadlines and server-side limits, from the lease period.
    timing: Timing,
    /// The lease table.
    table: T,
    /// The worker's connections; the heartbeat takes one of them while the grant is above 0.
    pool: Arc<LeasedPool>,
    /// The pool's gate, whose grant the lease moves.
    gate: Arc<Gate>,
}

impl Lease {
    /// The lease of `identity` in PostgreSQL (connecting with `options` while it has no
    /// connection of its grant), moving the gate of `pool`.
    pub(crate) fn new(
        identity: Identity,
        settings: LeaseSettings,
        options: PgConnectOptions,
        pool: Arc<LeasedPool>,
    ) -> Self {
        let timing = Timing::new(settings.period);
        let table = PgLeaseTable::new(identity, timing, options, Arc::clone(&pool));
        Lease::with_table(identity, settings, table, pool)
    }
}

impl<T: LeaseTable> Lease<T> {
    /// The lease of `identity` in `table`, moving the gate of `pool`.
    pub(super) fn with_table(
        identity: Identity,
        settings: LeaseSettings,
        table: T,
        pool: Arc<LeasedPool>,
    ) -> Self {
        let gate = Arc::clone(pool.gate());
        Self {
            identity,
            settings,
            timing: Timing::new(settings.period),
            table,
            pool,
            gate,
        }
    }

    /// Heartbeats until `stop`, then leaves: gives the connections up, closes the pool and
    /// deletes this worker's row.
    pub(crate) async fn run(self, stop: CancellationToken) {
        let period = self.timing.heartbeat();
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut failing, mut kept) = (false, false);
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
                    Ok(renewed) => {
                        failing = false;
                        if (renewed == Renewed::Kept) != kept {
                            kept = !kept;
                            if kept {
                                tracing::warn!(
                                    "the fleet's lock is held by another session; renewing this worker's own lease row and keeping its grant until it is free"
                                );
                            } else {
                                tracing::info!("the fleet's lock is free again");
                            }
                        }
                        // A completed shrink is recorded at once, so others may grow.
                        again = renewed == Renewed::Shrunk;
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

    /// One heartbeat and what follows from it.
    async fn renew(&self) -> Result<Renewed, BeatError> {
        let started = Instant::now();
        let result = self.heartbeat().beat().await;
        metrics::record_lease_renewal(match &result {
            Ok(Beat::Planned { .. }) => LeaseRenewal::Ok,
            Ok(Beat::Kept) => LeaseRenewal::Kept,
            Err(_) => LeaseRenewal::Failed,
        });
        let beat = result?;
        // Counted from before the heartbeat started, so before the database's `now()`.
        self.gate.renew(started + self.timing.validity());
        let (Plan { target, record }, workers) = match beat {
            Beat::Planned { plan, workers } => (plan, workers),
            Beat::Kept => return Ok(Renewed::Kept),
        };
        metrics::gauge_fleet_workers(workers);
        let (target, record) = (target as usize, record as usize);
        let capacity = self.gate.capacity();
        let from = self.gate.grant();
        // Grow only after the commit above, and never past the target: a record above it
        // only covers connections still to be closed.
        let grow_to = record.min(target);
        if grow_to > capacity {
            self.gate.set(grow_to, Duration::ZERO).await;
            tracing::info!(from, to = grow_to, workers, "connection grant raised");
            return Ok(Renewed::Planned);
        }
        let goal = target.min(capacity);
        if goal == capacity && self.pool.size() <= capacity {
            return Ok(Renewed::Planned);
        }
        let shrunk =
            self.gate.set(goal, self.timing.heartbeat()).await && self.pool.trim(goal).await;
        if from != goal {
            tracing::info!(
                from,
                to = goal,
                workers,
                done = shrunk,
                "connection grant lowered"
            );
        }
        // The row still says `record`: say `goal` now, so that the others may grow.
        Ok(if shrunk && record > goal {
            Renewed::Shrunk
        } else {
            Renewed::Planned
        })
    }

    /// What one heartbeat needs of this lease.
    fn heartbeat(&self) -> Heartbeat<'_, T> {
        Heartbeat {
            table: &self.table,
            gate: &self.gate,
            pool: &self.pool,
            timing: self.timing,
            worker_id: self.identity.worker_id.to_string(),
            wanted: self.settings.wanted,
            budget: self.settings.budget,
        }
    }

    /// Gives every connection up (waiting up to a lease period for the writes in progress).
    async fn fence(&self) {
        self.gate.set(0, self.settings.period).await;
        self.pool.trim(0).await;
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
        match tokio::time::timeout(LEAVE_TIMEOUT, self.table.leave()).await {
            Ok(Ok(())) => tracing::info!("connection lease released"),
            Ok(Err(error)) => {
                tracing::warn!(%error, "releasing the connection lease failed; it will expire");
            }
            Err(_) => tracing::warn!("releasing the connection lease timed out; it will expire"),
        }
    }
}

#[cfg(test)]
#[path = "lease_tests.rs"]
mod tests;
