//! Writing events into `webhook_events`: one statement for a whole receive (a multi-row
//! insert over UNNEST), idempotent on `(source, id)`.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use sqlx::types::Json;
use webhook_shared::envelope::Envelope;

/// Inserts `events` in one statement; rows that already exist are left as they are.
/// Returns, per event, whether it was new (`false`: a redelivery or a provider retry, or a
/// repeat within the same batch).
pub async fn insert_events(
    conn: &mut PgConnection,
    events: &[Envelope],
) -> Result<Vec<bool>, sqlx::Error> {
    let sources: Vec<&str> = events.iter().map(|e| e.source.as_str()).collect();
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let received_at: Vec<DateTime<Utc>> = events.iter().map(|e| e.received_at).collect();
    let headers: Vec<Json<_>> = events.iter().map(|e| Json(&e.headers)).collect();
    let content_types: Vec<Option<&str>> =
        events.iter().map(|e| e.content_type.as_deref()).collect();
    let bodies: Vec<&[u8]> = events.iter().map(|e| e.body.as_ref()).collect();
    let payloads: Vec<Option<Json<serde_json::Value>>> =
        events.iter().map(|e| e.json_payload().map(Json)).collect();
    let inserted: Vec<(String, String)> = sqlx::query_as(
        "INSERT INTO webhook_events (source, id, received_at, headers, content_type, body, payload)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::jsonb[], $5::text[], $6::bytea[], $7::jsonb[])
         ON CONFLICT (source, id) DO NOTHING
         RETURNING source, id",
    )
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
