//! The resumable position of a `worker replay` run: a row of `webhook_replay_cursors` named
//! after the run (`--cursor`, else the filter itself), and the rows of `webhook_replay_done`
//! beyond it. Several writers commit pages out of order, so each transaction records the key
//! interval it replayed, with its counts, in `webhook_replay_done` ([`record`]); the run moves
//! the cursor over the unbroken prefix of committed pages (see `frontier.rs`), deleting their
//! rows and adding their counts in one statement ([`fold`]). A run stopped anywhere goes on
//! from the cursor and skips every event inside a recorded interval (`select::page`): no
//! event is skipped, none run twice, and the counts (cursor plus rows) stay exact.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::replay::select::{Key, Range};

/// Where a run stands.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cursor {
    /// The run's name.
    pub(crate) name: String,
    /// The label of the range of the frontier (see `Range::label`), once it moved.
    pub(crate) range: Option<String>,
    /// The frontier: every event up to it in that range (and in the ranges before) is done.
    pub(crate) key: Key,
    /// Events replayed so far, over every run of this cursor (recorded intervals included).
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

/// The cursor `name` for `filter` (created if new; emptied first with `restart`, its recorded
/// intervals with it); an error when the name was used for another filter.
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
        "SELECT filter, partition_from, source, id, received_at,
                done + coalesce((SELECT sum(d.done) FROM webhook_replay_done d WHERE d.cursor_name = c.name), 0)::bigint,
                refused + coalesce((SELECT sum(d.refused) FROM webhook_replay_done d WHERE d.cursor_name = c.name), 0)::bigint,
                finished_at IS NOT NULL
         FROM webhook_replay_cursors c WHERE name = $1",
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

/// A key interval one transaction replayed, within `range`, with its counts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Interval<'a> {
    /// The range the events are in.
    pub(crate) range: Range,
    /// The first event's key: `(source, id, received_at)`.
    pub(crate) first: (&'a str, &'a str, DateTime<Utc>),
    /// The last event's key.
    pub(crate) last: (&'a str, &'a str, DateTime<Utc>),
    /// Events the handler took.
    pub(crate) done: i64,
    /// Events it refused.
    pub(crate) refused: i64,
}

/// Records `interval` as replayed by the run `name`, inside the transaction that replayed it.
/// It touches no cursor row, so writers in progress at once do not wait on each other.
pub(crate) async fn record(
    tx: &mut PgConnection,
    name: &str,
    interval: &Interval<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO webhook_replay_done (cursor_name, partition_from, first_source, first_id,
             first_received_at, last_source, last_id, last_received_at, done, refused)
         VALUES ($1, coalesce($2, '-infinity'::timestamptz), $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(name)
    .bind(interval.range.from)
    .bind(interval.first.0)
    .bind(interval.first.1)
    .bind(interval.first.2)
    .bind(interval.last.0)
    .bind(interval.last.1)
    .bind(interval.last.2)
    .bind(interval.done)
    .bind(interval.refused)
    .execute(tx)
    .await
    .map(|_| ())
}

/// Moves the cursor `name` to the frontier `key` of `range` (every event up to it is done):
/// the recorded intervals that end at or before it are deleted and their counts added to the
/// cursor's, in one statement.
pub(crate) async fn fold(
    conn: &mut PgConnection,
    name: &str,
    range: Range,
    key: &Key,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH folded AS (
             DELETE FROM webhook_replay_done
             WHERE cursor_name = $1
               AND (partition_from, last_source, last_id, last_received_at)
                   <= (coalesce($2, '-infinity'::timestamptz), $4, $5, $6)
             RETURNING done, refused)
         UPDATE webhook_replay_cursors
         SET partition_from = $3, source = $4, id = $5, received_at = $6,
             done = done + (SELECT coalesce(sum(done), 0) FROM folded),
             refused = refused + (SELECT coalesce(sum(refused), 0) FROM folded),
             updated_at = now(), finished_at = NULL
         WHERE name = $1",
    )
    .bind(name)
    .bind(range.from)
    .bind(range.label())
    .bind(&key.source)
    .bind(&key.id)
    .bind(key.received_at)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Marks the run finished once every page is committed: every interval left is folded into
/// the cursor's counts (a later run with the same cursor starts over, after `--restart`).
pub(crate) async fn finish(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH folded AS (
             DELETE FROM webhook_replay_done WHERE cursor_name = $1 RETURNING done, refused)
         UPDATE webhook_replay_cursors
         SET done = done + (SELECT coalesce(sum(done), 0) FROM folded),
             refused = refused + (SELECT coalesce(sum(refused), 0) FROM folded),
             updated_at = now(), finished_at = now()
         WHERE name = $1",
    )
    .bind(name)
    .execute(conn)
    .await
    .map(|_| ())
}
