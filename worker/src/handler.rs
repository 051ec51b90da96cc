//! The extension point: a [`Handler`] writes a batch of events inside the transaction the
//! worker commits before it deletes their messages. The default, [`StoreEvents`], stores
//! them in `webhook_events`; a custom handler can wrap it and update domain tables from the
//! payload in the same transaction (see `worker/examples/upsert_orders.rs`), so users adapt
//! the worker without forking it.

use sqlx::PgConnection;
use webhook_shared::envelope::Envelope;

use crate::store;

/// Writes decoded events. Called with an open transaction; the worker commits it when this
/// returns `Ok`, and rolls it back otherwise.
pub trait Handler: Send + Sync + 'static {
    /// Writes `events` through `tx`. Returns, per event in order, whether it was new (`true`)
    /// or already stored (`false`); an error fails the whole batch, which the worker then
    /// retries, or splits to find the event at fault when the error is not transient.
    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [Envelope],
    ) -> impl Future<Output = Result<Vec<bool>, sqlx::Error>> + Send + 'a;
}

/// The default handler: one multi-row insert into `webhook_events`, idempotent on
/// `(source, id)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreEvents;

impl Handler for StoreEvents {
    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [Envelope],
    ) -> impl Future<Output = Result<Vec<bool>, sqlx::Error>> + Send + 'a {
        store::insert_events(tx, events)
    }
}
