//! The lease table in PostgreSQL: [`PgLeaseTable`], the [`LeaseTable`] the worker runs
//! with. A heartbeat runs on one of the worker's pool connections, or on the registration
//! connection (one of its own, closed right after), and every transaction first sets its own
//! `lock_timeout`, `statement_timeout` and `idle_in_transaction_session_timeout` (`SET
//! LOCAL`, see `timing.rs`), so that PostgreSQL ends what a client deadline gives up on. The
//! statements themselves are in `table.rs`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection as _, PgConnection};
use tokio::time::timeout;

use crate::fleet::allocation::Lease as Row;
use crate::fleet::gate::Permit;
use crate::fleet::lease_table::{BeatError, Identity, LeaseTable};
use crate::fleet::pool::{AcquireError, Leased, LeasedPool};
use crate::fleet::table;
use crate::fleet::timing::Timing;

/// The lease table in PostgreSQL, for one worker.
#[derive(Debug)]
pub(crate) struct PgLeaseTable {
    /// This worker's row and session lock.
    identity: Identity,
    /// Server-side limits, the validity of a renewed row, the wait for ended backends.
    timing: Timing,
    /// For the registration connection.
    options: PgConnectOptions,
    /// The worker's connections, for a heartbeat under a permit of the grant.
    pool: Arc<LeasedPool>,
}

impl PgLeaseTable {
    /// The table as `identity` sees it, connecting with `options` (the registration
    /// connection) or through `pool`.
    pub(super) fn new(
        identity: Identity,
        timing: Timing,
        options: PgConnectOptions,
        pool: Arc<LeasedPool>,
    ) -> Self {
        Self {
            identity,
            timing,
            options,
            pool,
        }
    }
}

/// The connection one heartbeat runs on.
#[derive(Debug)]
pub(crate) enum Conn {
    /// A pool connection within the grant.
    Pool(Leased),
    /// The registration connection: a connection outside every grant.
    Registration(PgConnection),
}

impl Conn {
    fn get(&mut self) -> &mut PgConnection {
        match self {
            Conn::Pool(pooled) => pooled,
            Conn::Registration(registration) => registration,
        }
    }
}

impl LeaseTable for PgLeaseTable {
    type Conn = Conn;

    async fn open(&self, permit: Option<Permit>) -> Result<Conn, BeatError> {
        let Some(permit) = permit else {
            let registration = PgConnection::connect_with(&self.options).await?;
            return Ok(Conn::Registration(registration));
        };
        match self.pool.acquire_with(permit).await {
            Ok(pooled) => Ok(Conn::Pool(pooled)),
            Err(AcquireError::Connect(error)) => Err(error.into()),
            Err(AcquireError::Lapsed(_)) => unreachable!("the permit is held"),
        }
    }

    /// Rolled back if `decide` fails (the transaction is dropped).
    async fn plan<P: Send>(
        &self,
        conn: &mut Conn,
        decide: impl FnOnce(Vec<Row>, DateTime<Utc>) -> Result<(Row, P), BeatError> + Send,
    ) -> Result<Option<P>, BeatError> {
        let mut tx = conn.get().begin().await?;
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
        let rows = table::read(&mut tx).await?;
        let (row, planned) = decide(rows, now)?;
        let validity = self.timing.validity();
        table::write(&mut tx, &row, self.identity.session_key, validity).await?;
        tx.commit().await?;
        Ok(Some(planned))
    }

    async fn renew_own(&self, conn: &mut Conn, held: u32) -> Result<bool, BeatError> {
        let mut tx = conn.get().begin().await?;
        table::limit(&mut tx, self.timing.server_limits()).await?;
        let id = self.identity.worker_id;
        let renewed = table::renew_own(&mut tx, id, held, self.timing.validity()).await?;
        tx.commit().await?;
        Ok(renewed)
    }

    /// A pool connection goes back as soon as it is idle again; closing the registration
    /// connection has a step's deadline.
    async fn release(&self, conn: Conn, healthy: bool) {
        match conn {
            Conn::Pool(pooled) => pooled.release(healthy).await,
            Conn::Registration(registration) => {
                let _ = timeout(self.timing.step_deadline(), registration.close()).await;
            }
        }
    }

    async fn leave(&self) -> Result<(), BeatError> {
        let mut registration = PgConnection::connect_with(&self.options).await?;
        let mut tx = registration.begin().await?;
        table::limit(&mut tx, self.timing.server_limits()).await?;
        table::delete(&mut tx, self.identity.worker_id).await?;
        tx.commit().await?;
        registration.close().await?;
        Ok(())
    }
}
