//! The seam between the lease (`lease.rs`: when to heartbeat, what to ask for, when the grant
//! lapses) and the lease table it talks to: [`LeaseTable`], the database work of one
//! heartbeat and of the departure, and nothing else. PostgreSQL's is in `beat.rs`; the tests
//! use an in-memory one (`fleet/testing.rs`) that can be told to fail, hang or hold other
//! workers' rows.
//!
//! The lease keeps every rule: which connection a heartbeat runs on, the deadline of each
//! step (`timing.rs`), this worker's plan from the live rows (`allocation.rs`), what a missing
//! row means. The table keeps every statement and its transaction discipline: the server-side
//! limits each transaction sets on itself, the fleet's lock, the end of an expired worker's
//! backends.

use std::future::Future;

use chrono::{DateTime, Utc};

use crate::fleet::allocation::Lease as Row;
use crate::fleet::gate::Permit;
use crate::fleet::table::FLEET_LOCK;

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

/// Why a heartbeat failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BeatError {
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

/// The lease table of the fleet, as one worker's heartbeats and departure see it. Every
/// method runs without a deadline of its own: the lease sets them (`timing.rs`) and drops a
/// call that goes past one, connection included.
pub(crate) trait LeaseTable: Send + Sync {
    /// The connection one heartbeat runs on.
    type Conn: Send;

    /// Opens a heartbeat's connection: under `permit`, one of the grant (a pool connection);
    /// without one, the registration connection (outside every grant, for a worker whose
    /// grant is 0).
    fn open(
        &self,
        permit: Option<Permit>,
    ) -> impl Future<Output = Result<Self::Conn, BeatError>> + Send;

    /// The heartbeat's transaction under the fleet's lock: deletes the expired rows (ending
    /// their backends), reads the live ones, and writes the row `decide` works out from them
    /// and the database's `now()`, all in one transaction, committed only if `decide`
    /// succeeds. `Ok(None)`: the lock stayed busy (nothing changed).
    fn plan<P: Send>(
        &self,
        conn: &mut Self::Conn,
        decide: impl FnOnce(Vec<Row>, DateTime<Utc>) -> Result<(Row, P), BeatError> + Send,
    ) -> impl Future<Output = Result<Option<P>, BeatError>> + Send;

    /// Renews this worker's own row without the fleet's lock, keeping its grant, if the row
    /// is still valid and grants at least `held`; `false` otherwise.
    fn renew_own(
        &self,
        conn: &mut Self::Conn,
        held: u32,
    ) -> impl Future<Output = Result<bool, BeatError>> + Send;

    /// Gives a heartbeat's connection back: a pool connection back to the pool (reused if
    /// `healthy`), the registration connection closed.
    fn release(&self, conn: Self::Conn, healthy: bool) -> impl Future<Output = ()> + Send;

    /// Deletes this worker's row (it leaves), on a registration connection.
    fn leave(&self) -> impl Future<Output = Result<(), BeatError>> + Send;
}
