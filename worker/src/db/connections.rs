//! The connections the worker writes on, each taken under a permit of the connection gate
//! (see `fleet/gate.rs`): sqlx's pool of `DATABASE_MAX_CONNECTIONS` without a connection
//! budget (the gate then has as many permits, forever), the leased pool with one (see
//! `fleet/pool.rs`).

use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::{Connection as _, PgConnection, PgPool, Postgres};

use crate::db::errors::Failure;
use crate::db::write_error::WriteError;
use crate::fleet::{AcquireError, Gate, Leased, LeasedPool, Permit};

/// Longest wait for a ping or a close when a connection is given back.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(1);

/// Where connections come from.
#[derive(Debug, Clone)]
pub(crate) enum Connections {
    /// No budget: sqlx's pool.
    Pool(PgPool, Arc<Gate>),
    /// A budget: the leased pool.
    Leased(Arc<LeasedPool>),
}

/// One connection taken from [`Connections`], with its permit.
#[derive(Debug)]
pub(crate) enum Conn {
    /// From sqlx's pool (given back before the permit is freed).
    Pooled(PoolConnection<Postgres>, Permit),
    /// From the leased pool.
    Leased(Leased),
}

impl Connections {
    /// The gate every connection passes.
    pub(crate) fn gate(&self) -> &Arc<Gate> {
        match self {
            Self::Pool(_, gate) => gate,
            Self::Leased(pool) => pool.gate(),
        }
    }

    /// Waits for a permit, then for a connection.
    pub(crate) async fn acquire(&self) -> Result<Conn, WriteError> {
        match self {
            Self::Pool(pool, gate) => {
                let permit = gate.acquire().await?;
                let conn = pool.acquire().await.map_err(WriteError::Connect)?;
                Ok(Conn::Pooled(conn, permit))
            }
            Self::Leased(pool) => match pool.acquire().await {
                Ok(conn) => Ok(Conn::Leased(conn)),
                Err(AcquireError::Lapsed(lapsed)) => Err(lapsed.into()),
                Err(AcquireError::Connect(error)) => Err(WriteError::Connect(error)),
            },
        }
    }

    /// Connections open now, and of those, idle ones.
    pub(crate) fn sizes(&self) -> (u32, usize) {
        match self {
            Self::Pool(pool, _) => (pool.size(), pool.num_idle()),
            Self::Leased(pool) => (
                u32::try_from(pool.size()).unwrap_or(u32::MAX),
                pool.num_idle(),
            ),
        }
    }

    /// Closes sqlx's pool, waiting at most `timeout` for connections still in use; `false`
    /// if they were (the leased pool is closed by the lease as it leaves).
    pub(crate) async fn close(&self, timeout: Duration) -> bool {
        match self {
            Self::Pool(pool, _) => tokio::time::timeout(timeout, pool.close()).await.is_ok(),
            Self::Leased(_) => true,
        }
    }
}

impl Conn {
    /// Gives the connection back after a use that ended in `outcome`, then frees its
    /// permit. After an unreachable failure (a deadline included) the connection is thrown
    /// away unanswered: it may be silent, and a graceful close or a ping would wait on it.
    /// sqlx's pool pings every other connection given back; the leased pool keeps one after a
    /// failure only if a ping (which also sends the rollback of a failed transaction) gets an
    /// answer within [`RELEASE_TIMEOUT`].
    pub(crate) async fn release(self, outcome: Result<(), Failure>) {
        match self {
            Self::Pooled(conn, permit) => {
                if outcome == Err(Failure::Unreachable) {
                    // Out of the pool (its slot freed at once), the socket closed on drop.
                    drop(conn.detach());
                } else {
                    drop(conn);
                }
                drop(permit);
            }
            Self::Leased(mut conn) => {
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
        }
    }
}

impl std::ops::Deref for Conn {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        match self {
            Self::Pooled(conn, _) => conn,
            Self::Leased(conn) => conn,
        }
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match self {
            Self::Pooled(conn, _) => conn,
            Self::Leased(conn) => conn,
        }
    }
}
