//! `worker migrate-partitions`: moves the flat `webhook_events` of an earlier version to the
//! partitioned layout while workers keep writing, without copying a row: the old table becomes
//! the partition of everything before a cutover. Steps, each resumable (state in
//! `webhook_partition_migration`):
//!
//! 1. `backfill`: the dedup keys of rows within `DEDUP_HORIZON`, in batches along the old
//!    primary key (until the swap, the old key still dedups everything);
//! 2. `indexes`: the partition's future key `(source, id, received_at)` and a BRIN on
//!    `received_at`, built `CONCURRENTLY`;
//! 3. `constraint`: `CHECK (received_at < cutover)` added `NOT VALID` and validated (inserts go
//!    on), the cutover being the first interval boundary at least 10 minutes ahead;
//! 4. `swap`: one short transaction under `ACCESS EXCLUSIVE` (catalog work only; writers wait
//!    for it or pause and retry): rename the old table, give it its new key from the prebuilt
//!    index, create the partitioned parent, attach the old table `FROM (MINVALUE) TO
//!    (cutover)` (the validated check spares the scan), copy the grants; then partitions ahead.

#![allow(
    clippy::print_stdout,
    reason = "--status prints the state on stdout: it is this command's output"
)]

use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::{Connection as _, PgConnection};

use crate::config::{MigratePartitionsArgs, PartitionInterval, Step};
use crate::db;
use crate::maintain::{ensure_server_version, try_lock, unlock};
use crate::partitions::{LEGACY_RANGE_CHECK, catalog};

/// Keys copied per backfill statement.
const BACKFILL_BATCH: i64 = 10_000;
/// Pause between backfill statements, leaving the database to the writers.
const BACKFILL_PAUSE: Duration = Duration::from_millis(20);
/// The cutover is the first interval boundary at least this far ahead.
const CUTOVER_LEAD: Duration = Duration::from_secs(600);
/// Closer to the cutover than this, the check is made again for the next boundary.
const CUTOVER_MARGIN: Duration = Duration::from_secs(120);
/// Longest wait for a lock by the check and the swap, and attempts.
const SWAP_LOCK_TIMEOUT: &str = "2s";
const SWAP_ATTEMPTS: u32 = 10;

/// Runs the migration to its end, or to `--stop-after`, or prints where it stands.
pub(crate) async fn run(args: &MigratePartitionsArgs) -> anyhow::Result<()> {
    let mut conn = db::connect(&args.database).await?;
    let result = async {
        db::ensure_migrated(&mut conn).await?;
        ensure_server_version(&mut conn).await?;
        if args.status {
            return print_status(&mut conn).await;
        }
        anyhow::ensure!(
            try_lock(&mut conn).await?,
            "`worker maintain` or another `migrate-partitions` is running; try again when it is done"
        );
        let result = migrate(&mut conn, args).await;
        unlock(&mut conn).await;
        result
    }
    .await;
    let _ = conn.close().await;
    result
}

/// Every step not done yet, up to `--stop-after`.
async fn migrate(conn: &mut PgConnection, args: &MigratePartitionsArgs) -> anyhow::Result<()> {
    if !catalog::is_partitioned(conn).await? {
        let interval = args.partitions.partition_interval;
        for step in [Step::Backfill, Step::Indexes, Step::Constraint, Step::Swap] {
            let started = Instant::now();
            match step {
                Step::Backfill => backfill(conn, args.dedup_horizon).await?,
                Step::Indexes => build_indexes(conn).await?,
                Step::Constraint => {
                    bound_at_cutover(conn, interval).await?;
                }
                Step::Swap => swap(conn, interval).await?,
            }
            tracing::info!(step = ?step, elapsed = ?started.elapsed(), "migration step done");
            if args.stop_after == Some(step) {
                tracing::info!("stopping as asked (--stop-after); run again to go on");
                return Ok(());
            }
        }
    }
    let created = args
        .partitions
        .settings()
        .ensure_ahead(conn, Utc::now())
        .await
        .context("creating the partitions ahead")?;
    tracing::info!(
        created = created.len(),
        "webhook_events is partitioned; the old rows are its first partition"
    );
    Ok(())
}

/// Records `step` (and the backfill's cursor or the cutover) as where the migration stands.
async fn record(
    conn: &mut PgConnection,
    step: &str,
    cursor: Option<(&str, &str)>,
    cutover: Option<DateTime<Utc>>,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO webhook_partition_migration (step, cursor_source, cursor_id, cutover) VALUES ($1, $2, $3, $4)
         ON CONFLICT (singleton) DO UPDATE SET step = $1,
             cursor_source = coalesce($2, webhook_partition_migration.cursor_source),
             cursor_id = coalesce($3, webhook_partition_migration.cursor_id),
             cutover = coalesce($4, webhook_partition_migration.cutover), updated_at = now()",
    )
    .bind(step)
    .bind(cursor.map(|c| c.0))
    .bind(cursor.map(|c| c.1))
    .bind(cutover)
    .execute(conn)
    .await
    .context("recording the migration's state")?;
    Ok(())
}

/// Step 1: the keys of rows received within `horizon`, from where the last run stopped.
async fn backfill(conn: &mut PgConnection, horizon: Duration) -> anyhow::Result<()> {
    let cursor: Option<(Option<String>, Option<String>)> =
        sqlx::query_as("SELECT cursor_source, cursor_id FROM webhook_partition_migration")
            .fetch_optional(&mut *conn)
            .await?;
    let (mut source, mut id) = cursor
        .map(|(s, i)| (s.unwrap_or_default(), i.unwrap_or_default()))
        .unwrap_or_default();
    let since = Utc::now() - chrono::Duration::from_std(horizon).unwrap_or_default();
    let mut copied = 0;
    loop {
        let last: Option<(String, String, i64)> = sqlx::query_as(
            "WITH batch AS (
                 SELECT source, id, received_at FROM webhook_events
                 WHERE (source, id) > ($1, $2) ORDER BY source, id LIMIT $4
             ), copied AS (
                 INSERT INTO webhook_event_keys (source, id, received_at)
                 SELECT source, id, received_at FROM batch WHERE received_at >= $3
                 ON CONFLICT DO NOTHING
             )
             SELECT source, id, (SELECT count(*) FROM batch) FROM batch ORDER BY source DESC, id DESC LIMIT 1",
        )
        .bind(&source)
        .bind(&id)
        .bind(since)
        .bind(BACKFILL_BATCH)
        .fetch_optional(&mut *conn)
        .await
        .context("copying keys")?;
        let Some((last_source, last_id, rows)) = last else {
            break;
        };
        record(conn, "backfill", Some((&last_source, &last_id)), None).await?;
        (source, id) = (last_source, last_id);
        copied += rows;
        tracing::info!(rows_seen = copied, "backfilling keys");
        tokio::time::sleep(BACKFILL_PAUSE).await;
    }
    record(conn, "indexes", None, None).await
}

/// Step 2: the new key and the BRIN index, built without blocking writes (an invalid index
/// left by an interrupted build is dropped and built again).
async fn build_indexes(conn: &mut PgConnection) -> anyhow::Result<()> {
    for (name, definition) in [
        (
            "webhook_events_legacy_key",
            "UNIQUE INDEX CONCURRENTLY IF NOT EXISTS webhook_events_legacy_key ON webhook_events (source, id, received_at)",
        ),
        (
            "webhook_events_legacy_brin",
            "INDEX CONCURRENTLY IF NOT EXISTS webhook_events_legacy_brin ON webhook_events USING brin (received_at)",
        ),
    ] {
        let invalid: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT FROM pg_index WHERE indexrelid = to_regclass($1) AND NOT indisvalid)",
        )
        .bind(name)
        .fetch_one(&mut *conn)
        .await?;
        if invalid {
            sqlx::raw_sql(&format!("DROP INDEX CONCURRENTLY {name}"))
                .execute(&mut *conn)
                .await?;
        }
        sqlx::raw_sql(&format!("CREATE {definition}"))
            .execute(&mut *conn)
            .await
            .with_context(|| format!("building {name}"))?;
    }
    record(conn, "constraint", None, None).await
}

/// The first `interval` boundary at least [`CUTOVER_LEAD`] after `now`.
pub(crate) fn cutover(interval: PartitionInterval, now: DateTime<Utc>) -> DateTime<Utc> {
    let earliest = now + chrono::Duration::from_std(CUTOVER_LEAD).unwrap_or_default();
    let floor = interval.floor(earliest);
    if floor == earliest {
        floor
    } else {
        interval.next(floor)
    }
}

/// Step 3: the check that bounds the old table below the cutover, validated without
/// blocking writes; made again for a later cutover when the recorded one is too close.
async fn bound_at_cutover(
    conn: &mut PgConnection,
    interval: PartitionInterval,
) -> anyhow::Result<DateTime<Utc>> {
    let recorded: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT cutover FROM webhook_partition_migration")
            .fetch_optional(&mut *conn)
            .await?
            .flatten();
    let margin = chrono::Duration::from_std(CUTOVER_MARGIN).unwrap_or_default();
    let validated: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT FROM pg_constraint WHERE conrelid = 'webhook_events'::regclass AND conname = $1 AND convalidated)",
    )
    .bind(LEGACY_RANGE_CHECK)
    .fetch_one(&mut *conn)
    .await?;
    if let Some(cutover) = recorded.filter(|&c| validated && c - Utc::now() > margin) {
        return Ok(cutover);
    }
    let cutover = cutover(interval, Utc::now());
    let at = cutover.to_rfc3339_opts(SecondsFormat::Secs, true);
    with_lock_retries(conn, &[
        &format!("ALTER TABLE webhook_events DROP CONSTRAINT IF EXISTS {LEGACY_RANGE_CHECK}"),
        &format!("ALTER TABLE webhook_events ADD CONSTRAINT {LEGACY_RANGE_CHECK} CHECK (received_at < '{at}') NOT VALID"),
    ])
    .await
    .context("adding the cutover check")?;
    sqlx::raw_sql(&format!(
        "ALTER TABLE webhook_events VALIDATE CONSTRAINT {LEGACY_RANGE_CHECK}"
    ))
    .execute(&mut *conn)
    .await
    .context("validating the cutover check")?;
    record(conn, "swap", None, Some(cutover)).await?;
    tracing::info!(%cutover, "rows received from the cutover on will go to new partitions");
    Ok(cutover)
}

/// Step 4: the swap, in one transaction.
async fn swap(conn: &mut PgConnection, interval: PartitionInterval) -> anyhow::Result<()> {
    let cutover = bound_at_cutover(conn, interval).await?;
    let at = cutover.to_rfc3339_opts(SecondsFormat::Secs, true);
    let grants: Vec<String> = sqlx::query_scalar(
        "SELECT format('GRANT %s ON webhook_events TO %s', a.privilege_type,
                       CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END)
         FROM pg_class c, aclexplode(c.relacl) a
         WHERE c.oid = 'webhook_events'::regclass AND a.grantee <> c.relowner",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut statements = vec![
        "LOCK TABLE webhook_events IN ACCESS EXCLUSIVE MODE".to_owned(),
        "ALTER TABLE webhook_events RENAME TO webhook_events_legacy".to_owned(),
        "ALTER INDEX IF EXISTS webhook_events_received_at_idx RENAME TO webhook_events_legacy_received_at_idx".to_owned(),
        "ALTER TABLE webhook_events_legacy DROP CONSTRAINT webhook_events_pkey".to_owned(),
        "ALTER TABLE webhook_events_legacy ADD CONSTRAINT webhook_events_legacy_pkey PRIMARY KEY USING INDEX webhook_events_legacy_key".to_owned(),
        "CREATE TABLE webhook_events (
             source text NOT NULL, id text NOT NULL, received_at timestamptz NOT NULL,
             stored_at timestamptz NOT NULL DEFAULT now(), headers jsonb NOT NULL, content_type text,
             body bytea NOT NULL, payload jsonb, PRIMARY KEY (source, id, received_at)
         ) PARTITION BY RANGE (received_at)".to_owned(),
        "CREATE INDEX webhook_events_received_at_idx ON webhook_events USING brin (received_at)".to_owned(),
        format!("ALTER TABLE webhook_events ATTACH PARTITION webhook_events_legacy FOR VALUES FROM (MINVALUE) TO ('{at}')"),
    ];
    statements.extend(grants);
    statements.push(
        "UPDATE webhook_partition_migration SET step = 'done', updated_at = now()".to_owned(),
    );
    let refs: Vec<&str> = statements.iter().map(String::as_str).collect();
    let took = with_lock_retries(conn, &refs).await.context("the swap")?;
    tracing::info!(pause = ?took, "swapped: webhook_events is partitioned");
    Ok(())
}

/// Runs `statements` in one transaction whose lock waits end after [`SWAP_LOCK_TIMEOUT`],
/// again after a pause while a lock is busy; returns how long the committed one took.
async fn with_lock_retries(
    conn: &mut PgConnection,
    statements: &[&str],
) -> anyhow::Result<Duration> {
    let mut attempt = 1;
    loop {
        let started = Instant::now();
        let result: Result<(), sqlx::Error> = async {
            let mut tx = conn.begin().await?;
            sqlx::query(&format!("SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'"))
                .execute(&mut *tx)
                .await?;
            for statement in statements {
                sqlx::query(statement).execute(&mut *tx).await?;
            }
            tx.commit().await
        }
        .await;
        match result {
            Ok(()) => return Ok(started.elapsed()),
            Err(error) if attempt < SWAP_ATTEMPTS && is_lock_timeout(&error) => {
                tracing::info!(attempt, "a lock was busy; trying again");
                attempt += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Whether `error` is a lock wait cut by `lock_timeout` (55P03).
fn is_lock_timeout(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "55P03")
}

/// Prints where the migration stands.
async fn print_status(conn: &mut PgConnection) -> anyhow::Result<()> {
    let partitioned = catalog::is_partitioned(conn).await?;
    type State = (
        String,
        Option<String>,
        Option<String>,
        Option<DateTime<Utc>>,
        DateTime<Utc>,
    );
    let state: Option<State> =
        sqlx::query_as(
            "SELECT step, cursor_source, cursor_id, cutover, updated_at FROM webhook_partition_migration",
        )
        .fetch_optional(&mut *conn)
        .await?;
    println!("webhook_events partitioned: {partitioned}");
    match state {
        None => println!("migration: not started"),
        Some((step, source, id, cutover, updated)) => println!(
            "migration: next step {step}; backfill cursor {}/{}; cutover {}; updated {updated}",
            source.unwrap_or_default(),
            id.unwrap_or_default(),
            cutover.map_or_else(|| "not set".to_owned(), |c| c.to_string()),
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cutover_is_the_first_boundary_ten_minutes_ahead() {
        let at = |t: &str| t.parse::<DateTime<Utc>>().unwrap_or_default();
        let day = PartitionInterval::Day;
        assert_eq!(
            cutover(day, at("2026-12-06T20:00:00Z")),
            at("2026-12-07T00:00:00Z")
        );
        // Too close to midnight: the next one.
        assert_eq!(
            cutover(day, at("2026-12-06T23:55:00Z")),
            at("2026-12-08T00:00:00Z")
        );
        assert_eq!(
            cutover(day, at("2026-12-06T23:50:00Z")),
            at("2026-12-07T00:00:00Z")
        );
    }
}
