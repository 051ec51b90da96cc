//! The worker's pool of connections, each taken under a permit of the gate: a fixed number
//! of permits without a connection budget, as many as the lease grants with one.
//!
//! sqlx's pool gives a connection back in a task of its own after a ping, so a permit freed
//! at the end of a write would let the next write open a new connection while the old one is
//! still on its way back; the pool would grow to `DATABASE_MAX_CONNECTIONS` whatever the
//! grant; and that ping has no deadline, so a connection that goes silent during it holds its
//! slot forever. Here a connection is back among the idle ones before its permit is freed, and
//! a new one opens only when none is idle: the connections open never outnumber the permits
//! plus the idle ones left over from a shrink, which [`LeasedPool::trim`] closes.
//!
//! With a budget, each connection takes the worker's session lock when it opens (see
//! `lease.rs`), unless the worker talks to a transaction pooler
//! (`DATABASE_STATEMENT_CACHE_CAPACITY=0`: RDS Proxy would pin the session, and a backend
//! there is the pooler's, not this worker's). One that was idle for a while is pinged before
//! it is used again, within the connect timeout (a silent one is thrown away); one whose
//! write failed is closed rather than reused; one idle for [`IDLE_TIMEOUT`] is closed at the
//! next heartbeat (or the next refresh of the gauges, without a budget).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection as _, PgConnection};
use tokio::time::Instant;

use crate::fleet::gate::{Gate, Lapsed, Permit};
use crate::fleet::table::SESSION_LOCK;

/// An idle connection is pinged before reuse once it has been idle this long.
const CHECK_AFTER: Duration = Duration::from_secs(1);
/// An idle connection is closed once it has been idle this long.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest wait for a graceful close (it may meet a silent socket).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AcquireError {
    /// The lease lapsed.
    #[error(transparent)]
    Lapsed(#[from] Lapsed),
    /// Connecting failed or timed out.
    #[error(transparent)]
    Connect(#[from] sqlx::Error),
}

/// An idle connection and since when.
#[derive(Debug)]
struct Idle {
    conn: PgConnection,
    since: Instant,
}

/// The leased pool; see the module documentation.
#[derive(Debug)]
pub(crate) struct LeasedPool {
    options: PgConnectOptions,
    session_key: Option<i64>,
    connect_timeout: Duration,
    gate: Arc<Gate>,
    idle: Mutex<Vec<Idle>>,
    /// Connections open (in use, idle, or opening).
    open: AtomicUsize,
}

impl LeasedPool {
    /// A pool connecting with `options` (taking the lock `session_key`, if any), within
    /// `gate`.
    pub(crate) fn new(
        options: PgConnectOptions,
        session_key: Option<i64>,
        connect_timeout: Duration,
        gate: Arc<Gate>,
    ) -> Self {
        Self {
            options,
            session_key,
            connect_timeout,
            gate,
            idle: Mutex::new(Vec::new()),
            open: AtomicUsize::new(0),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Connections open now.
    pub(crate) fn size(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Idle connections now.
    pub(crate) fn num_idle(&self) -> usize {
        self.idle().len()
    }

    /// The gate this pool's connections pass.
    pub(crate) fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    /// Waits for a permit, then takes an idle connection or opens one.
    pub(crate) async fn acquire(self: &Arc<Self>) -> Result<Leased, AcquireError> {
        let permit = self.gate.acquire().await?;
        self.acquire_with(permit).await
    }

    /// Takes an idle connection or opens one, under `permit`, within the connect timeout.
    pub(crate) async fn acquire_with(
        self: &Arc<Self>,
        permit: Permit,
    ) -> Result<Leased, AcquireError> {
        let taking = async {
            match self.take_idle().await {
                Some(conn) => Ok(conn),
                None => self.connect().await,
            }
        };
        let conn = tokio::time::timeout(self.connect_timeout, taking)
            .await
            .unwrap_or(Err(sqlx::Error::PoolTimedOut))?;
        Ok(Leased {
            conn: Some(conn),
            pool: Arc::clone(self),
            _permit: permit,
        })
    }

    /// The most recently used idle connection that answers, if any.
    async fn take_idle(&self) -> Option<PgConnection> {
        loop {
            let Idle { mut conn, since } = self.idle().pop()?;
            let counted = Counted(Some(&self.open));
            if since.elapsed() < CHECK_AFTER || conn.ping().await.is_ok() {
                counted.keep();
                return Some(conn);
            }
        }
    }

    /// Opens a connection and takes the session lock on it.
    async fn connect(&self) -> Result<PgConnection, sqlx::Error> {
        self.open.fetch_add(1, Ordering::SeqCst);
        let counted = Counted(Some(&self.open));
        let connecting = async {
            let mut conn = PgConnection::connect_with(&self.options).await?;
            if let Some(key) = self.session_key {
                sqlx::query(SESSION_LOCK)
                    .bind(key)
                    .execute(&mut conn)
                    .await?;
            }
            Ok(conn)
        };
        let conn = tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .unwrap_or(Err(sqlx::Error::PoolTimedOut))?;
        counted.keep();
        Ok(conn)
    }

    /// Closes idle connections until at most `to` are open; `false` if the ones left open
    /// are all in use.
    pub(crate) async fn trim(&self, to: usize) -> bool {
        while self.size() > to {
            let Some(idle) = self.idle().pop() else {
                return false;
            };
            self.open.fetch_sub(1, Ordering::SeqCst);
            close(idle.conn).await;
        }
        true
    }

    /// Closes the connections idle for longer than [`IDLE_TIMEOUT`].
    pub(crate) async fn close_stale(&self) {
        let stale: Vec<Idle> = {
            let mut idle = self.idle();
            let (stale, fresh) = idle
                .drain(..)
                .partition(|idle| idle.since.elapsed() >= IDLE_TIMEOUT);
            *idle = fresh;
            stale
        };
        for idle in stale {
            self.open.fetch_sub(1, Ordering::SeqCst);
            close(idle.conn).await;
        }
    }
}

/// Closes `conn` gracefully, or hard after [`CLOSE_TIMEOUT`].
async fn close(conn: PgConnection) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, conn.close()).await;
}

/// A connection counted as open while it is pinged or opened: no longer counted if that
/// fails, or is cancelled midway (the heartbeat's deadline), unless [`Counted::keep`] is called.
struct Counted<'a>(Option<&'a AtomicUsize>);

impl Counted<'_> {
    /// The connection is open and stays counted.
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        if let Some(open) = self.0 {
            open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// A connection taken from the [`LeasedPool`], with its permit. Give it back with
/// [`Leased::release`]; dropped otherwise (an aborted write), it is closed.
#[derive(Debug)]
pub(crate) struct Leased {
    conn: Option<PgConnection>,
    pool: Arc<LeasedPool>,
    /// Freed after the connection is back (fields drop after `Drop::drop`).
    _permit: Permit,
}

impl Leased {
    /// Gives the connection back: idle again if `healthy` and the pool is within the grant,
    /// else closed. The permit is freed only after that.
    pub(crate) async fn release(mut self, healthy: bool) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let pool = &self.pool;
        if healthy && pool.size() <= pool.gate.grant() {
            pool.idle().push(Idle {
                conn,
                since: Instant::now(),
            });
        } else {
            pool.open.fetch_sub(1, Ordering::SeqCst);
            close(conn).await;
        }
    }
}

impl std::ops::Deref for Leased {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.conn
            .as_ref()
            .unwrap_or_else(|| unreachable!("present until released"))
    }
}

impl std::ops::DerefMut for Leased {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn
            .as_mut()
            .unwrap_or_else(|| unreachable!("present until released"))
    }
}

impl Drop for Leased {
    fn drop(&mut self) {
        if self.conn.take().is_some() {
            self.pool.open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}
