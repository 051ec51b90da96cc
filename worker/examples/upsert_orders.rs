//! A custom handler: the worker as shipped, plus the "CRUD" step of the original
//! API Gateway → Lambda → SQS → Lambda → RDS pattern. Every event is stored in
//! `webhook_events` as usual, and events whose JSON payload has an `order_id` upsert a row in
//! an `orders` table, in the same transaction: both are committed, or neither is and the
//! message is retried.
//!
//! `worker replay` runs stored events through it again: `replay` upserts the orders from all
//! of them (after a fix to this code, or to rebuild `orders`).
//!
//! Run it like the worker, with the same settings:
//! `cargo run -p worker --example upsert_orders -- run`
//! (its own migration, run at every start and by `migrate`, creates `orders` if missing).

use std::process::ExitCode;

use sqlx::PgConnection;
use webhook_shared::envelope::Envelope;
use worker::{Handler, HandlerError, StoreEvents, Stored};

/// Stores events, then upserts `orders` from the new ones; on replay, from all of them.
struct UpsertOrders;

/// Upserts an `orders` row from each event whose JSON payload has an `order_id`. Idempotent:
/// webhooks can arrive out of order, so the most recently received status stays.
async fn upsert_orders<'a>(
    tx: &mut PgConnection,
    events: impl Iterator<Item = &'a Envelope>,
) -> Result<(), HandlerError> {
    for event in events {
        let Some(payload) = event.json_payload() else {
            continue;
        };
        let Some(order_id) = payload.get("order_id").and_then(|id| id.as_str()) else {
            continue;
        };
        let status = payload
            .get("status")
            .and_then(|s| s.as_str())
            .unwrap_or("unknown");
        sqlx::query(
            "INSERT INTO orders (id, status, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, updated_at = EXCLUDED.updated_at
             WHERE orders.updated_at <= EXCLUDED.updated_at",
        )
        .bind(order_id)
        .bind(status)
        .bind(event.received_at)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

impl Handler for UpsertOrders {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        events: &[Envelope],
    ) -> Result<Vec<Stored>, HandlerError> {
        let results = StoreEvents.handle(&mut *tx, events).await?;
        let new = events
            .iter()
            .zip(&results)
            .filter(|(_, stored)| **stored == Stored::New)
            .map(|(event, _)| event);
        upsert_orders(tx, new).await?;
        Ok(results)
    }

    /// `worker replay`: the events are stored already (duplicates to `StoreEvents`), so the
    /// orders are upserted from all of them.
    async fn replay(
        &self,
        tx: &mut PgConnection,
        events: &[Envelope],
    ) -> Result<Vec<Stored>, HandlerError> {
        let results = StoreEvents.handle(&mut *tx, events).await?;
        upsert_orders(tx, events.iter()).await?;
        Ok(results)
    }

    async fn migrate(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS orders (id text PRIMARY KEY, status text NOT NULL, updated_at timestamptz NOT NULL)",
        )
        .execute(conn)
        .await
        .map(|_| ())
    }
}

fn main() -> ExitCode {
    worker::main_with(UpsertOrders)
}
