//! One heartbeat of the lease: its connection and its transactions, each step with a
//! deadline and every transaction with server-side limits (`timing.rs`).
//!
//! The connection: while the worker has a grant, one of its own pool connections, taken
//! ahead of every waiting write (`gate.rs`); the registration connection (one outside every
//! grant, opened for the heartbeat and closed after it) only while its grant is 0 (a worker
//! registering, or one with no share). So all heartbeats together never need more than the
//! grants plus the registration connection, however slow the writes are. (A connection reserved for each
//! worker's heartbeat would cost the budget one connection per worker; waiting for the next
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

use sqlx::{Connection as _, PgConnection};
use tokio::time::{Instant, timeout, timeout_at};

use crate::fleet::allocation::{self, Lease as Row, Plan};
use crate::fleet::lease::Lease;
use crate::fleet::pool::{AcquireError, Leased};
use crate::fleet::table;

/// Why a heartbeat failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum BeatError {
    /// A statement failed (or the server ended it: a timeout of the transaction's own).
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A step of the heartbeat went past its deadline.
    #[error("the heartbeat timed out: {0}")]
    Timeout(&'static str),
    /// This worker's row is gone while it holds connections: others took its share.
    #[error("this worker's lease row is gone (it expired)")]
    Lost,
    /// The fleet's lock stayed busy and this worker has no row of its own to renew.
    #[error("the fleet's lock is held by another session")]
    LockBusy,
}

/// A committed heartbeat.
#[derive(Debug)]
pub(super) enum Beat {
    /// Under the fleet's lock: this worker's plan, with the live workers it was made among.
    Planned { plan: Plan, workers: usize },
    /// The fleet's lock was busy: this worker's own row renewed, its grant kept as it is.
    Kept,
}

/// The connection one heartbeat runs on.
#[derive(Debug)]
enum Conn {
    /// A pool connection within the grant.
    Pool(Leased),
    /// The registration connection: a connection outside every grant.
    Registration(PgConnection),
}

impl Lease {
    /// One heartbeat: a connection, then its transactions, each step within its deadline.
    /// On a deadline the connection is dropped, not reused: the server ends what its backend
    /// was doing by the transaction's own limits.
    pub(super) async fn beat(&self) -> Result<Beat, BeatError> {
        let (mut conn, deadline) = self.connection().await?;
        let result = timeout_at(deadline, self.transactions(&mut conn)).await;
        match (conn, result) {
            (Conn::Pool(pooled), Ok(result)) => {
                pooled.release(result.is_ok()).await;
                result
            }
            (Conn::Registration(registration), Ok(result)) => {
                let _ = timeout(self.timing.step_deadline(), registration.close()).await;
                result
            }
            (conn, Err(_)) => {
                drop(conn);
                Err(BeatError::Timeout("its transaction"))
            }
        }
    }

    /// A connection of the grant (ahead of every write, for as long as the grant leaves time
    /// to renew it), or the registration connection while the grant is 0; with the deadline of the transactions.
    async fn connection(&self) -> Result<(Conn, Instant), BeatError> {
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
            return match timeout_at(deadline, self.pool.acquire_with(permit)).await {
                Ok(Ok(pooled)) => Ok((Conn::Pool(pooled), deadline)),
                Ok(Err(AcquireError::Connect(error))) => Err(error.into()),
                Ok(Err(AcquireError::Lapsed(_))) => unreachable!("the permit is held"),
                Err(_) => Err(BeatError::Timeout("connecting")),
            };
        }
        let registration = timeout(step, PgConnection::connect_with(&self.options))
            .await
            .map_err(|_| BeatError::Timeout("opening the registration connection"))??;
        Ok((Conn::Registration(registration), Instant::now() + step))
    }

    /// The transaction under the fleet's lock, or the renewal of this worker's own row if
    /// the lock stays busy.
    async fn transactions(&self, conn: &mut Conn) -> Result<Beat, BeatError> {
        let conn: &mut PgConnection = match conn {
            Conn::Pool(pooled) => pooled,
            Conn::Registration(registration) => registration,
        };
        match self.under_lock(conn).await? {
            Some(beat) => Ok(beat),
            None => self.keep(conn).await,
        }
    }

    /// The heartbeat's transaction under the fleet's lock: expired rows out, this worker's
    /// plan, its row renewed; `None` if the lock stayed busy (rolled back).
    async fn under_lock(&self, conn: &mut PgConnection) -> Result<Option<Beat>, BeatError> {
        let mut tx = conn.begin().await?;
        table::limit(&mut tx, self.timing.server_limits()).await?;
        if !table::lock(&mut tx).await? {
            tx.rollback().await?;
            return Ok(None);
        }
        let (now, expired) = table::expire(&mut tx).await?;
        if !expired.is_empty() {
            let keys: Vec<i64> = expired.iter().map(|(_, key)| *key).collect();
            let ended = table::end_backends(&mut tx, &keys, self.timing.end_wait()).await?;
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
        let plan = allocation::plan(&rows, me, self.held());
        let row = Row {
            granted: plan.record,
            ..rows[me].clone()
        };
        let validity = self.timing.validity();
        table::write(&mut tx, &row, self.identity.session_key, validity).await?;
        tx.commit().await?;
        Ok(Some(Beat::Planned {
            plan,
            workers: rows.len(),
        }))
    }

    /// The fleet's lock is busy: renews this worker's own row alone, keeping its grant, if
    /// the row is still valid and covers what the worker holds.
    async fn keep(&self, conn: &mut PgConnection) -> Result<Beat, BeatError> {
        let mut tx = conn.begin().await?;
        table::limit(&mut tx, self.timing.server_limits()).await?;
        let id = self.identity.worker_id;
        let renewed = table::renew_own(&mut tx, id, self.held(), self.timing.validity()).await?;
        tx.commit().await?;
        if renewed {
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
