//! The shipped handler and its table: [`StoreEvents`] stores every event in `webhook_events`
//! through [`insert_events`], one statement idempotent on `(source, id)` (through the key
//! table `webhook_event_keys`, within `DEDUP_HORIZON`), rows in key order so concurrent writes
//! never deadlock. A custom handler can call [`insert_events`]
//! inside its own transaction (see `worker/examples/upsert_orders.rs`).

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, Row as _};
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

/// The statement [`insert_events`] tries first, inside a savepoint: both tables written with
/// plain inserts, which cost no speculative insertion (its lock and confirm record per row)
/// and no join. Any row that exists already (in the key table, or in the events table past
/// the dedup horizon) or that two writers insert at once makes it fail with 23505; the
/// savepoint is then rolled back and [`INSERT_EVENTS_SQL`] does the work. `$1`..`$7` as
/// there.
pub const INSERT_NEW_EVENTS_SQL: &str = "WITH keys AS (
             INSERT INTO webhook_event_keys (source, id, received_at)
             SELECT source, id, received_at
             FROM UNNEST($1::text[], $2::text[], $3::timestamptz[]) WITH ORDINALITY AS t(source, id, received_at, n)
             ORDER BY n
         )
         INSERT INTO webhook_events (source, id, received_at, headers, content_type, body, payload)
         SELECT source, id, received_at, headers, content_type, body, payload::jsonb
         FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::jsonb[], $5::text[], $6::bytea[], $7::text[])
              WITH ORDINALITY AS t(source, id, received_at, headers, content_type, body, payload, n)
         ORDER BY n";

/// The statement that sorts new rows from existing ones: `$1`..`$7` are the sources, ids,
/// `received_at`s, headers (jsonb), content types, bodies and JSON payload texts, in
/// `(source, id)` order. Public, as [`INSERT_NEW_EVENTS_SQL`], so that a benchmark can EXPLAIN
/// exactly what the worker runs.
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

/// Inserts `events`; rows that already exist are left as they are. Returns, per event in the
/// order given, whether it was new (`false`: a redelivery or a provider retry, or a repeat
/// within the same batch). A provider's retry counts as a duplicate while its key is in
/// `webhook_event_keys` (`DEDUP_HORIZON`, trimmed by `worker maintain`), whichever partition
/// its own `received_at` falls in.
///
/// Most batches are all new: they are written by [`INSERT_NEW_EVENTS_SQL`] in a savepoint
/// (one more round trip). A batch with a row that exists, or one that another writer
/// inserts at the same moment, fails there with a unique violation (which PostgreSQL logs
/// as an error); the savepoint is rolled back and [`INSERT_EVENTS_SQL`] inserts only what is
/// new. A batch that repeats an event goes to the latter at once.
///
/// Call it inside a transaction (a handler's is one): the savepoint needs one.
///
/// Rows are inserted in `(source, id)` order whatever the order of `events`: two
/// transactions that hold some of the same keys then take their row locks in the same order
/// and cannot deadlock (40P01).
pub async fn insert_events(
    conn: &mut PgConnection,
    events: &[Envelope],
) -> Result<Vec<bool>, sqlx::Error> {
    let mut sorted: Vec<&Envelope> = events.iter().collect();
    sorted.sort_by(|a, b| key(a).cmp(&key(b)));
    let repeats = sorted.windows(2).any(|pair| key(pair[0]) == key(pair[1]));
    if !repeats && insert_all_new(conn, &sorted).await? {
        return Ok(vec![true; events.len()]);
    }
    // The JSON text is parsed by PostgreSQL: a parsed copy here would cost several times
    // the body (see `db/payload_column.rs`). The key table decides what is new (a provider's
    // retry may carry another received_at, so land in another partition); the events
    // table's own key catches a redelivery whose key was already trimmed (same received_at,
    // same partition). ON CONFLICT without a target works on the partitioned table and on
    // the flat one of earlier versions alike.
    let mut new = HashSet::new();
    for row in bind_columns(sqlx::query(INSERT_EVENTS_SQL), &sorted)
        .fetch_all(&mut *conn)
        .await?
    {
        new.insert((row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?));
    }
    Ok(events
        .iter()
        // `remove`: of two copies of one event in a batch, only the first counts as new.
        .map(|e| new.remove(&(e.source.clone(), e.id.clone())))
        .collect())
}

/// Writes `sorted` with [`INSERT_NEW_EVENTS_SQL`] in a savepoint: `true` when every row was
/// new and is written, `false` when one existed (nothing written, the transaction usable).
///
/// The savepoint is not released: a round trip saved per batch. It ends with the
/// transaction, or with a savepoint of the caller's made before it; another call in the same
/// transaction makes one of the same name, which its rollback then names (a released
/// savepoint would have kept its subtransaction id until the commit all the same).
async fn insert_all_new(
    conn: &mut PgConnection,
    sorted: &[&Envelope],
) -> Result<bool, sqlx::Error> {
    sqlx::query("SAVEPOINT webhook_insert_events")
        .execute(&mut *conn)
        .await?;
    let written = bind_columns(sqlx::query(INSERT_NEW_EVENTS_SQL), sorted)
        .execute(&mut *conn)
        .await;
    match written {
        Ok(_) => Ok(true),
        Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some(UNIQUE_VIOLATION) => {
            sqlx::query("ROLLBACK TO SAVEPOINT webhook_insert_events")
                .execute(&mut *conn)
                .await?;
            Ok(false)
        }
        Err(error) => Err(error),
    }
}

/// SQLSTATE unique_violation.
const UNIQUE_VIOLATION: &str = "23505";

/// An event's key.
fn key(event: &Envelope) -> (&str, &str) {
    (&event.source, &event.id)
}

/// Binds the seven column arrays of both statements, from events in key order.
fn bind_columns<'q>(
    query: Query<'q, Postgres, PgArguments>,
    sorted: &[&'q Envelope],
) -> Query<'q, Postgres, PgArguments> {
    let received_at: Vec<DateTime<Utc>> = sorted.iter().map(|e| e.received_at).collect();
    let headers: Vec<Json<_>> = sorted.iter().map(|e| Json(&e.headers)).collect();
    let content_types: Vec<Option<&str>> =
        sorted.iter().map(|e| e.content_type.as_deref()).collect();
    let bodies: Vec<&[u8]> = sorted.iter().map(|e| e.body.as_ref()).collect();
    let payloads: Vec<Option<&str>> = sorted.iter().map(|e| json_text(e)).collect();
    query
        .bind(sorted.iter().map(|e| e.source.as_str()).collect::<Vec<_>>())
        .bind(sorted.iter().map(|e| e.id.as_str()).collect::<Vec<_>>())
        .bind(received_at)
        .bind(headers)
        .bind(content_types)
        .bind(bodies)
        .bind(payloads)
}
