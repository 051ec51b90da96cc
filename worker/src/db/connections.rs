//! The connections the worker writes on: the worker's own pool (see `fleet/pool.rs`), each
//! connection taken under a permit of the connection gate (see `fleet/gate.rs`). Without a
//! connection budget the gate has `DATABASE_MAX_CONNECTIONS` permits forever; with one, the
//! lease sets them.
//!
//! sqlx's pool is not used for writes: it pings every connection given back in a task of its
//! own, without a deadline, so a connection that goes silent during that ping would hold its
//! slot forever and the pool would shrink with every failover.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{Connection as _, PgConnection};

use crate::config::DatabaseArgs;
use crate::db;
use crate::db::errors::Failure;
use crate::db::write_error::WriteError;
use crate::fleet::{self, AcquireError, Gate, Lease, LeaseSettings, Leased, LeasedPool};

/// Longest wait for a ping or a close when a connection is given back.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(1);

/// Where connections come from.
#[derive(Debug, Clone)]
pub(crate) struct Connections {
    pool: Arc<LeasedPool>,
    /// Whether a lease sizes the pool (and closes it as it leaves).
    leased: bool,
}

/// One connection taken from [`Connections`], with its permit.
pub(crate) type Conn = Leased;

impl Connections {
    /// A pool behind a gate of fixed size (no connection budget).
    pub(crate) fn fixed(pool: Arc<LeasedPool>) -> Self {
        Self {
            pool,
            leased: false,
        }
    }

    /// A pool sized by a lease (a connection budget).
    pub(crate) fn leased(pool: Arc<LeasedPool>) -> Self {
        Self { pool, leased: true }
    }

    /// The gate every connection passes.
    pub(crate) fn gate(&self) -> &Arc<Gate> {
        self.pool.gate()
    }

    /// Waits for a permit, then for a connection.
    pub(crate) async fn acquire(&self) -> Result<Conn, WriteError> {
        match self.pool.acquire().await {
            Ok(conn) => Ok(conn),
            Err(AcquireError::Lapsed(lapsed)) => Err(lapsed.into()),
            Err(AcquireError::Connect(error)) => Err(WriteError::Connect(error)),
        }
    }

    /// Runs `call` on a connection within `deadline`, then gives the connection back (or
    /// throws it away, after an unreachable failure or the deadline); returns what `call`
    /// returned and the wait for the connection.
    pub(crate) async fn within<T>(
        &self,
        deadline: Duration,
        call: impl AsyncFnOnce(&mut PgConnection) -> Result<T, WriteError>,
    ) -> Result<(T, Duration), WriteError> {
        let started = Instant::now();
        let mut conn = self.acquire().await?;
        let acquire = started.elapsed();
        let result = tokio::time::timeout(deadline, call(&mut conn))
            .await
            .unwrap_or(Err(WriteError::Deadline(deadline)));
        release(
            conn,
            result.as_ref().map(|_| ()).map_err(WriteError::failure),
        )
        .await;
        result.map(|value| (value, acquire))
    }

    /// Connections open now, and of those, idle ones.
    pub(crate) fn sizes(&self) -> (u32, usize) {
        (
            u32::try_from(self.pool.size()).unwrap_or(u32::MAX),
            self.pool.num_idle(),
        )
    }

    /// Closes the connections idle for too long (the lease's heartbeat does it with a
    /// budget; without one, the gauges' refresh calls this).
    pub(crate) async fn close_stale(&self) {
        if !self.leased {
            self.pool.close_stale().await;
        }
    }

    /// Closes the idle connections, waiting at most `timeout`; `false` if some were still in
    /// use (a leased pool is closed by the lease as it leaves).
    pub(crate) async fn close(&self, timeout: Duration) -> bool {
        if self.leased {
            return true;
        }
        tokio::time::timeout(timeout, self.pool.trim(0))
            .await
            .unwrap_or(false)
    }
}

/// Gives `conn` back after a use that ended in `outcome`, then frees its permit. After an
/// unreachable failure (a deadline included) the connection is thrown away unanswered: it
/// may be silent, and a graceful close or a ping would wait on it. After another failure it
/// is kept only if a ping (which also sends the rollback of a failed transaction) gets an
/// answer within [`RELEASE_TIMEOUT`].
pub(crate) async fn release(mut conn: Conn, outcome: Result<(), Failure>) {
    let healthy = match outcome {
        Ok(()) => true,
        Err(Failure::Unreachable) => false,
        Err(_) => matches!(
            tokio::time::timeout(RELEASE_TIMEOUT, conn.ping()).await,
            Ok(Ok(()))
        ),
    };
    // Closing may wait on a silent socket: dropped unfinished, it closes hard.
    let _ = tokio::time::timeout(RELEASE_TIMEOUT, conn.release(healthy)).await;
}

/// Connections within the fleet's budget when `budget` (with its lease period) is given,
/// `wanted` of them at most: a leased pool and its lease, registered as `identity`; without a
/// budget, a pool behind a gate of `wanted`. Used by `run` and by `replay`.
pub(crate) fn shared(
    database: &DatabaseArgs,
    budget: Option<(u32, Duration)>,
    identity: Option<fleet::Identity>,
    wanted: u32,
) -> anyhow::Result<(Connections, Option<Lease>)> {
    match (budget, identity) {
        (Some((budget, period)), Some(identity)) => {
            let options = db::connect_options(database)?;
            let pool = Arc::new(LeasedPool::new(
                options.clone(),
                // Behind a transaction pooler a session lock would pin the session.
                (database.database_statement_cache_capacity > 0).then_some(identity.session_key),
                database.acquire_timeout(),
                Arc::new(Gate::leased()),
            ));
            let settings = LeaseSettings {
                budget,
                wanted,
                period,
            };
            let lease = Lease::new(identity, settings, options, Arc::clone(&pool));
            Ok((Connections::leased(pool), Some(lease)))
        }
        _ => {
            let pool = Arc::new(LeasedPool::new(
                db::connect_options(database)?,
                None,
                database.acquire_timeout(),
                Arc::new(Gate::fixed(wanted as usize)),
            ));
            Ok((Connections::fixed(pool), None))
        }
    }
}
