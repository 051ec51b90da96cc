//! The resumable position of a `worker replay` run, a row of `webhook_replay_cursors` named
//! after the run (`--cursor`, else the filter itself). It moves in the same transaction as
//! each batch, so a run stopped anywhere goes on after its last committed batch: no event is
//! skipped, none run twice.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::replay::select::Key;

/// Where a run stands.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cursor {
    /// The run's name.
    pub(crate) name: String,
    /// The label of the range being read (see `Range::label`), once a batch committed.
    pub(crate) range: Option<String>,
    /// The last key committed in that range.
    pub(crate) key: Key,
    /// Events replayed so far, over every run of this cursor.
    pub(crate) done: i64,
    /// Events refused so far.
    pub(crate) refused: i64,
    /// Whether a run went through to the end.
    pub(crate) finished: bool,
}

type Row = (
    serde_json::Value,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<DateTime<Utc>>,
    i64,
    i64,
    bool,
);

/// The cursor `name` for `filter` (created if new; emptied first with `restart`); an error
/// when the name was used for another filter.
pub(crate) async fn open(
    conn: &mut PgConnection,
    name: &str,
    filter: &serde_json::Value,
    restart: bool,
) -> anyhow::Result<Cursor> {
    if restart {
        sqlx::query("DELETE FROM webhook_replay_cursors WHERE name = $1")
            .bind(name)
            .execute(&mut *conn)
            .await?;
    }
    let row: Option<Row> = sqlx::query_as(
        "SELECT filter, partition_from, source, id, received_at, done, refused, finished_at IS NOT NULL
         FROM webhook_replay_cursors WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(&mut *conn)
    .await
    .context("reading the replay cursor")?;
    let Some((saved, range, source, id, received_at, done, refused, finished)) = row else {
        sqlx::query("INSERT INTO webhook_replay_cursors (name, filter) VALUES ($1, $2)")
            .bind(name)
            .bind(filter)
            .execute(&mut *conn)
            .await
            .context("creating the replay cursor")?;
        return Ok(Cursor {
            name: name.to_owned(),
            ..Cursor::default()
        });
    };
    anyhow::ensure!(
        &saved == filter,
        "the replay cursor `{name}` belongs to another selection ({saved}); give another --cursor, or --restart"
    );
    Ok(Cursor {
        name: name.to_owned(),
        range,
        key: Key {
            source: source.unwrap_or_default(),
            id: id.unwrap_or_default(),
            received_at,
        },
        done,
        refused,
        finished,
    })
}

/// Moves the cursor past a committed batch, inside its transaction.
pub(crate) async fn advance(
    tx: &mut PgConnection,
    cursor: &Cursor,
    done: i64,
    refused: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE webhook_replay_cursors
         SET partition_from = $2, source = $3, id = $4, received_at = $5, done = done + $6,
             refused = refused + $7, updated_at = now(), finished_at = NULL
         WHERE name = $1",
    )
    .bind(&cursor.name)
    .bind(&cursor.range)
    .bind(&cursor.key.source)
    .bind(&cursor.key.id)
    .bind(cursor.key.received_at)
    .bind(done)
    .bind(refused)
    .execute(tx)
    .await
    .map(|_| ())
}

/// Marks the run finished (a later run with the same cursor starts over, after `--restart`).
pub(crate) async fn finish(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE webhook_replay_cursors SET finished_at = now() WHERE name = $1")
        .bind(name)
        .execute(conn)
        .await
        .map(|_| ())
}
