//! The shipped handler and its table: [`StoreEvents`] stores every event in `webhook_events`
//! through [`insert_events`], one statement idempotent on `(source, id)` (through the key
//! table `webhook_event_keys`, within `DEDUP_HORIZON`), rows in key order so concurrent writes
//! never deadlock. A custom handler can call [`insert_events`]
//! inside its own transaction (see `worker/examples/upsert_orders.rs`).

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use sqlx::types::Json;
use webhook_shared::envelope::Envelope;

use crate::db::handler::{Handler, HandlerError, Stored};
use crate::db::payload_column::json_text;

/// The default handler: one multi-row insert into `webhook_events`, idempotent on
/// `(source, id)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreEvents;

impl Handler for StoreEvents {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        events: &[Envelope],
    ) -> Result<Vec<Stored>, HandlerError> {
        let new = insert_events(tx, events).await?;
        Ok(new
            .into_iter()
            .map(|new| if new { Stored::New } else { Stored::Duplicate })
            .collect())
    }
}

/// The statement of [`insert_events`]: `$1`..`$7` are the sources, ids, `received_at`s,
/// headers (jsonb), content types, bodies and JSON payload texts, in `(source, id)` order.
/// Public so that a benchmark can EXPLAIN exactly what the worker runs.
pub const INSERT_EVENTS_SQL: &str = "WITH input AS (
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::jsonb[], $5::text[], $6::bytea[], $7::text[])
                  WITH ORDINALITY AS t(source, id, received_at, headers, content_type, body, payload, n)
         ), fresh AS (
             INSERT INTO webhook_event_keys (source, id, received_at)
             SELECT source, id, received_at FROM input ORDER BY n
             ON CONFLICT (source, id) DO NOTHING
             RETURNING source, id, received_at
         )
         INSERT INTO webhook_events (source, id, received_at, headers, content_type, body, payload)
         SELECT i.source, i.id, i.received_at, i.headers, i.content_type, i.body, i.payload::jsonb
         FROM input i JOIN fresh f USING (source, id, received_at)
         ORDER BY i.n
         ON CONFLICT DO NOTHING
         RETURNING source, id";

/// Inserts `events` in one statement; rows that already exist are left as they are.
/// Returns, per event in the order given, whether it was new (`false`: a redelivery or a
/// provider retry, or a repeat within the same batch). A provider's retry counts as a
/// duplicate while its key is in `webhook_event_keys` (`DEDUP_HORIZON`, trimmed by `worker
/// maintain`), whichever partition its own `received_at` falls in.
///
/// Rows are inserted in `(source, id)` order whatever the order of `events`: two
/// transactions that hold some of the same keys then take their row locks in the same order
/// and cannot deadlock (40P01).
pub async fn insert_events(
    conn: &mut PgConnection,
    events: &[Envelope],
) -> Result<Vec<bool>, sqlx::Error> {
    let mut sorted: Vec<&Envelope> = events.iter().collect();
    sorted.sort_by(|a, b| (&a.source, &a.id).cmp(&(&b.source, &b.id)));
    let sources: Vec<&str> = sorted.iter().map(|e| e.source.as_str()).collect();
    let ids: Vec<&str> = sorted.iter().map(|e| e.id.as_str()).collect();
    let received_at: Vec<DateTime<Utc>> = sorted.iter().map(|e| e.received_at).collect();
    let headers: Vec<Json<_>> = sorted.iter().map(|e| Json(&e.headers)).collect();
    let content_types: Vec<Option<&str>> =
        sorted.iter().map(|e| e.content_type.as_deref()).collect();
    let bodies: Vec<&[u8]> = sorted.iter().map(|e| e.body.as_ref()).collect();
    // The JSON text, parsed by PostgreSQL: a parsed copy here would cost several times the
    // body (see `db/payload_column.rs`).
    let payloads: Vec<Option<&str>> = sorted.iter().map(|e| json_text(e)).collect();
    // WITH ORDINALITY + ORDER BY: the rows reach each insert in the sorted order. The key
    // table decides what is new (a provider's retry may carry another received_at, so land
    // in another partition); the events table's own key catches a redelivery whose key was
    // already trimmed (same received_at, same partition). ON CONFLICT without a target works
    // on the partitioned table and on the flat one of earlier versions alike.
    let inserted: Vec<(String, String)> = sqlx::query_as(INSERT_EVENTS_SQL)
        .bind(sources)
        .bind(ids)
        .bind(received_at)
        .bind(headers)
        .bind(content_types)
        .bind(bodies)
        .bind(payloads)
        .fetch_all(conn)
        .await?;
    let mut new: HashSet<(String, String)> = inserted.into_iter().collect();
    Ok(events
        .iter()
        // `remove`: of two copies of one event in a batch, only the first counts as new.
        .map(|e| new.remove(&(e.source.clone(), e.id.clone())))
        .collect())
}
