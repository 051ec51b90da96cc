//! One heartbeat of the lease: its connection and its transactions, each step with a
//! deadline (`timing.rs`), against a [`LeaseTable`] (PostgreSQL's sets server-side limits
//! on every transaction as well, see `pg_table.rs`). It takes what it needs of the lease as
//! a [`Heartbeat`], and tells it what happened as a [`Beat`].
//!
//! The connection: while the worker has a grant, one of its own pool connections, taken
//! ahead of every waiting write (`gate.rs`); the registration connection (one outside every
//! grant, opened for the heartbeat and closed after it) only while its grant is 0 (a worker
//! registering, or one with no share). So all heartbeats together never need more than the
//! grants plus the registration connection, however slow the writes are. (A connection
//! reserved for each worker's heartbeat would cost the budget one connection per worker; waiting for the next
//! of its own writes to end costs nothing, and makes a worker miss its renewal only if every
//! one of its connections stays in a single write for about 3P/8, see `timing.rs`.)
//!
//! The transactions: first the usual one under the fleet's lock (expired rows out and their
//! backends ended, this worker's plan, its row renewed). If the lock stays busy for the whole
//! `lock_timeout`, whoever holds it (a worker in its heartbeat, a frozen one, an operator's
//! session left open), the heartbeat renews this worker's own row instead, alone and without
//! the lock, keeping its grant as it is: only if that row is still valid by the database's
//! clock and still grants what the worker holds. That is safe without the lock because every
//! grant is worked out against the live rows, this one included: while it stands, nobody can
//! have been granted this worker's share. Nothing else changes until the lock is free again:
//! no worker grows, shrinks, registers, or removes an expired row (a dead worker's share
//! stays taken), and the budget holds throughout.

use tokio::time::{Instant, timeout, timeout_at};

use crate::fleet::allocation::{self, Lease as Row, Plan};
use crate::fleet::gate::Gate;
use crate::fleet::lease_table::{BeatError, LeaseTable};
use crate::fleet::pool::LeasedPool;
use crate::fleet::timing::Timing;

/// A committed heartbeat.
#[derive(Debug)]
pub(super) enum Beat {
    /// Under the fleet's lock: this worker's plan, with the live workers it was made among.
    Planned { plan: Plan, workers: usize },
    /// The fleet's lock was busy: this worker's own row renewed, its grant kept as it is.
    Kept,
}

/// What one heartbeat needs of the lease.
#[derive(Debug)]
pub(super) struct Heartbeat<'a, T> {
    /// The lease table.
    pub(super) table: &'a T,
    /// The worker's gate: its grant, and the permit the heartbeat takes first.
    pub(super) gate: &'a Gate,
    /// The worker's connections (how many are open).
    pub(super) pool: &'a LeasedPool,
    /// The deadlines.
    pub(super) timing: Timing,
    /// This worker's row key, in text form as rows carry it.
    pub(super) worker_id: String,
    /// The row of this worker when it registers: `granted` 0, its `wanted` and `budget`.
    pub(super) wanted: u32,
    /// DATABASE_CONNECTION_BUDGET, for the row of this worker when it registers.
    pub(super) budget: u32,
}

impl<T: LeaseTable> Heartbeat<'_, T> {
    /// One heartbeat: a connection, then its transactions, each step within its deadline.
    /// On a deadline the connection is dropped, not reused: the server ends what its backend
    /// was doing by the transaction's own limits.
    pub(super) async fn beat(&self) -> Result<Beat, BeatError> {
        let (mut conn, deadline) = self.connection().await?;
        match timeout_at(deadline, self.transactions(&mut conn)).await {
            Ok(result) => {
                self.table.release(conn, result.is_ok()).await;
                result
            }
            Err(_) => {
                drop(conn);
                Err(BeatError::Timeout("its transaction"))
            }
        }
    }

    /// A connection of the grant (ahead of every write, for as long as the grant leaves time
    /// to renew it), or the registration connection while the grant is 0; with the deadline
    /// of the transactions.
    async fn connection(&self) -> Result<(T::Conn, Instant), BeatError> {
        let step = self.timing.step_deadline();
        if self.gate.grant() > 0 {
            let wait = self
                .timing
                .permit_wait(self.gate.valid_until(), Instant::now());
            let permit = timeout(wait, self.gate.acquire_first())
                .await
                .map_err(|_| BeatError::Timeout("no connection of the grant came free"))?;
            // One deadline for the connection and the transactions: the wait above left
            // room for one step before the grant lapses.
            let deadline = Instant::now() + step;
            let conn = timeout_at(deadline, self.table.open(Some(permit)))
                .await
                .map_err(|_| BeatError::Timeout("connecting"))??;
            return Ok((conn, deadline));
        }
        let registration = timeout(step, self.table.open(None))
            .await
            .map_err(|_| BeatError::Timeout("opening the registration connection"))??;
        Ok((registration, Instant::now() + step))
    }

    /// The transaction under the fleet's lock, or the renewal of this worker's own row if
    /// the lock stays busy.
    async fn transactions(&self, conn: &mut T::Conn) -> Result<Beat, BeatError> {
        let decide = |rows, now| self.decide(rows, now);
        if let Some((plan, workers)) = self.table.plan(conn, decide).await? {
            return Ok(Beat::Planned { plan, workers });
        }
        self.keep(conn).await
    }

    /// Under the fleet's lock, from the live rows and the database's `now()`: this worker's
    /// plan, the row that records it, and how many workers it was made among. A worker that
    /// holds connections and has no row lost it (others may have its share); one without
    /// connections registers.
    fn decide(
        &self,
        mut rows: Vec<Row>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(Row, (Plan, usize)), BeatError> {
        let me = match rows.iter().position(|row| row.worker_id == self.worker_id) {
            Some(me) => me,
            None if self.gate.capacity() > 0 => return Err(BeatError::Lost),
            None => {
                rows.push(Row {
                    worker_id: self.worker_id.clone(),
                    granted: 0,
                    wanted: self.wanted,
                    budget: self.budget,
                    started_at: now,
                });
                rows.len() - 1
            }
        };
        let plan = allocation::plan(&rows, me, self.held());
        let row = Row {
            granted: plan.record,
            ..rows[me].clone()
        };
        Ok((row, (plan, rows.len())))
    }

    /// The fleet's lock is busy: renews this worker's own row alone, keeping its grant, if
    /// the row is still valid and covers what the worker holds.
    async fn keep(&self, conn: &mut T::Conn) -> Result<Beat, BeatError> {
        if self.table.renew_own(conn, self.held()).await? {
            Ok(Beat::Kept)
        } else if self.gate.capacity() > 0 {
            Err(BeatError::Lost)
        } else {
            Err(BeatError::LockBusy)
        }
    }

    /// Connections this worker may hold now: its permits, or more while a shrink closes them.
    fn held(&self) -> u32 {
        let held = self.gate.capacity().max(self.pool.size());
        u32::try_from(held).unwrap_or(u32::MAX)
    }
}
