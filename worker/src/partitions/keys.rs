//! Trimming `webhook_event_keys`: keys older than `DEDUP_HORIZON` are deleted in short
//! transactions of a few hundred pages each (a TID range scan, so no index on `received_at`
//! is needed and no long transaction holds back vacuum), within a time budget; the next run
//! goes on from the start.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

/// Heap pages visited per delete.
const PAGES_PER_STEP: i64 = 500;

/// Deletes the keys received before `cutoff`, for at most `budget`; returns how many it
/// deleted and whether it went through the whole table.
pub(crate) async fn trim(
    conn: &mut PgConnection,
    cutoff: DateTime<Utc>,
    budget: Duration,
) -> Result<(u64, bool), sqlx::Error> {
    let started = Instant::now();
    let pages: i64 = sqlx::query_scalar(
        "SELECT pg_relation_size('webhook_event_keys') / current_setting('block_size')::bigint",
    )
    .fetch_one(&mut *conn)
    .await?;
    let mut deleted = 0;
    let mut page = 0;
    while page < pages {
        if started.elapsed() > budget {
            return Ok((deleted, false));
        }
        let done = sqlx::query(
            "DELETE FROM webhook_event_keys
             WHERE ctid >= format('(%s,0)', $1::bigint)::tid AND ctid < format('(%s,0)', $2::bigint)::tid
               AND received_at < $3",
        )
        .bind(page)
        .bind(page + PAGES_PER_STEP)
        .bind(cutoff)
        .execute(&mut *conn)
        .await?;
        deleted += done.rows_affected();
        page += PAGES_PER_STEP;
    }
    Ok((deleted, true))
}
