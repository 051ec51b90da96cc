//! The extension point: a [`Handler`] writes a batch of events inside the transaction the
//! worker commits before it deletes their messages. The default, [`StoreEvents`], stores
//! them in `webhook_events`; a custom handler can wrap it and update domain tables from the
//! payload in the same transaction (see `worker/examples/upsert_orders.rs`), so users adapt
//! the worker without forking it.
//!
//! The contract:
//! - `Ok(results)`: one [`Stored`] per event, in order. The transaction is committed; new and
//!   duplicate events are deleted from the queue; refused ones go to the dead-letter queue
//!   with their reason.
//! - `Err(HandlerError::Transient)`: the database (or the way to it) is unwell. The
//!   transaction is rolled back and every message of the batch is retried after a back-off.
//! - `Err(HandlerError::Permanent)`: something in this batch can never be written. The
//!   worker splits the batch to find the event at fault; that event goes to the dead-letter
//!   queue with the error as its reason, and the others are written.
//! - Returning a number of results other than the number of events is a bug in the handler:
//!   the worker logs it as such and treats the batch as permanently failed, never as a sick
//!   database.
//!
//! `sqlx::Error` converts into [`HandlerError`] with `?`, sorted by what it blames (see
//! `db/errors.rs`): only the data classes (22, 23, 54, P0) are `Permanent`; everything else is
//! the database's condition and `Transient`, and among those, errors every write would hit
//! (privileges, schema, a lock held on the table) pause the worker like an outage. Refusals
//! (whether `Stored::Refused` or a `Permanent` error) pass the refusal fuse (`pipeline/refusal_fuse.rs`): when
//! many distinct events are refused alike, they are released, not dead-lettered.

use std::borrow::Cow;

use sqlx::PgConnection;
use webhook_shared::envelope::Envelope;

use crate::db::errors::is_transient;

/// What became of one event in a handler's transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Written now.
    New,
    /// Already stored earlier (a redelivery or a provider retry); nothing written.
    Duplicate,
    /// Can never be written; the message goes to the dead-letter queue with this reason.
    Refused(Cow<'static, str>),
}

/// Why a handler's transaction failed.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// May pass by itself (lost connection, timeout, deadlock, overload): retried later.
    #[error("transient: {0}")]
    Transient(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Will fail again for the same data: the batch is split to find the event at fault.
    #[error("permanent: {0}")]
    Permanent(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<sqlx::Error> for HandlerError {
    fn from(error: sqlx::Error) -> Self {
        if is_transient(&error) {
            Self::Transient(Box::new(error))
        } else {
            Self::Permanent(Box::new(error))
        }
    }
}

/// Writes decoded events. Called with an open transaction; the worker commits it when this
/// returns `Ok`, and rolls it back otherwise. See the module documentation for the contract.
pub trait Handler: Send + Sync + 'static {
    /// Writes `events` through `tx`, returning one [`Stored`] per event, in order.
    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [Envelope],
    ) -> impl Future<Output = Result<Vec<Stored>, HandlerError>> + Send + 'a;

    /// Runs stored `events` again (`worker replay`): by default the same as [`Handler::handle`].
    /// Through [`StoreEvents`](crate::StoreEvents) every stored event is a
    /// [`Stored::Duplicate`], so a handler that acts only on new events should override this
    /// to act on all of them (idempotently), as `worker/examples/upsert_orders.rs` does.
    /// With `--concurrency` above 1, several batches are replayed in transactions in progress
    /// at once, in no set order, as live batches are.
    fn replay<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [Envelope],
    ) -> impl Future<Output = Result<Vec<Stored>, HandlerError>> + Send + 'a {
        self.handle(tx, events)
    }

    /// Creates what the handler needs beyond the worker's own schema (run by `worker migrate`
    /// and by `run` with `RUN_MIGRATIONS=true`, after the worker's migrations). Idempotent.
    fn migrate<'a>(
        &'a self,
        conn: &'a mut PgConnection,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a {
        let _ = conn;
        std::future::ready(Ok(()))
    }
}
