//! Writing events into `webhook_events`, idempotently on `(source, id)`.

use sqlx::PgPool;
use sqlx::types::Json;
use webhook_shared::envelope::Envelope;

/// What happened to an event on insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// A new row was written.
    Inserted,
    /// The row was already there (a redelivery or a provider retry).
    Duplicate,
}

/// Inserts one event; a row that already exists is left as it is.
pub async fn insert_event(pool: &PgPool, envelope: &Envelope) -> Result<Stored, sqlx::Error> {
    let result = sqlx::query(
        "INSERT INTO webhook_events (source, id, received_at, headers, content_type, body, payload)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (source, id) DO NOTHING",
    )
    .bind(&envelope.source)
    .bind(&envelope.id)
    .bind(envelope.received_at)
    .bind(Json(&envelope.headers))
    .bind(envelope.content_type.as_deref())
    .bind(envelope.body.as_ref())
    .bind(envelope.json_payload().map(Json))
    .execute(pool)
    .await?;
    Ok(if result.rows_affected() == 1 {
        Stored::Inserted
    } else {
        Stored::Duplicate
    })
}
