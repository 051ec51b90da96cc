//! `worker maintain`: one pass of upkeep, meant for a schedule (hourly): create partitions
//! ahead, trim the dedup keys past `DEDUP_HORIZON`, apply `RETENTION`, and record the run
//! for the workers' gauges. One maintainer at a time (a session advisory lock; a second one
//! exits at once, successfully). Runs as the role that owns `webhook_events`, on a connection
//! without the writers' session timeouts; every DDL waits at most 500 ms for its lock, so a
//! busy table delays maintenance, never the writes.

use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use sqlx::PgConnection;

use crate::config::MaintainArgs;
use crate::db;
use crate::partitions::catalog;
use crate::partitions::export::Exporter;
use crate::partitions::keeper::is_not_owner;
use crate::partitions::{keys, retention};

/// The session advisory lock of `worker maintain` and `worker migrate-partitions`
/// ("swmaintn").
pub(crate) const MAINTAIN_LOCK: i64 = 0x7377_6d61_696e_746e;

/// Oldest PostgreSQL with `DETACH PARTITION … CONCURRENTLY`.
const MIN_SERVER_VERSION: i32 = 140_000;

/// Fails unless the server is PostgreSQL 14 or later.
pub(crate) async fn ensure_server_version(conn: &mut PgConnection) -> anyhow::Result<()> {
    let version: i32 = sqlx::query_scalar("SELECT current_setting('server_version_num')::int")
        .fetch_one(&mut *conn)
        .await
        .context("reading the server version")?;
    anyhow::ensure!(
        version >= MIN_SERVER_VERSION,
        "partitions need PostgreSQL 14 or later (DETACH PARTITION … CONCURRENTLY); this server is {version}"
    );
    Ok(())
}

/// Takes the maintainers' session lock; `false` when another holds it.
pub(crate) async fn try_lock(conn: &mut PgConnection) -> anyhow::Result<bool> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(MAINTAIN_LOCK)
        .fetch_one(&mut *conn)
        .await
        .context("taking the maintainers' lock")
}

/// Gives the maintainers' session lock back.
pub(crate) async fn unlock(conn: &mut PgConnection) {
    let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MAINTAIN_LOCK)
        .execute(&mut *conn)
        .await;
}

/// Attempts at creating partitions when a lock is busy, and the pause between them.
const CREATE_ATTEMPTS: u32 = 5;
const CREATE_RETRY: Duration = Duration::from_secs(2);

/// Time allowed for one S3 attempt of the export.
const S3_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs one pass of maintenance on DATABASE_URL.
pub(crate) async fn run(args: &MaintainArgs) -> anyhow::Result<()> {
    let exporter = exporter(args).await?;
    let mut conn = db::connect(&args.database).await?;
    let result = maintain(&mut conn, args, exporter.as_ref()).await;
    let _ = sqlx::Connection::close(conn).await;
    result
}

/// The exporter of `EXPORT_BUCKET`, its bucket checked (HeadBucket) before anything is done.
async fn exporter(args: &MaintainArgs) -> anyhow::Result<Option<Exporter>> {
    let Some(bucket) = &args.export_bucket else {
        return Ok(None);
    };
    let s3 = webhook_shared::large_payload::s3_client(webhook_shared::large_payload::S3Timeouts {
        attempt: S3_ATTEMPT_TIMEOUT,
        max_attempts: 3,
    })
    .await;
    s3.head_bucket()
        .bucket(bucket)
        .send()
        .await
        .with_context(|| {
            format!("EXPORT_BUCKET {bucket}: the bucket cannot be reached (does it exist?)")
        })?;
    Ok(Some(Exporter {
        s3,
        bucket: bucket.clone(),
        prefix: args.export_prefix.clone(),
    }))
}

/// The pass, under the maintainers' lock.
async fn maintain(
    conn: &mut PgConnection,
    args: &MaintainArgs,
    exporter: Option<&Exporter>,
) -> anyhow::Result<()> {
    db::ensure_migrated(conn).await?;
    ensure_server_version(conn).await?;
    if !try_lock(conn).await? {
        tracing::info!(
            "another `worker maintain` (or `migrate-partitions`) is running; nothing to do"
        );
        return Ok(());
    }
    let result = steps(conn, args, exporter).await;
    unlock(conn).await;
    result
}

/// Every step, in order; the run is recorded only when all of them succeeded.
async fn steps(
    conn: &mut PgConnection,
    args: &MaintainArgs,
    exporter: Option<&Exporter>,
) -> anyhow::Result<()> {
    let now = Utc::now();
    let partitioned = catalog::is_partitioned(conn).await?;
    let mut created = 0;
    let mut applied = retention::Applied::default();
    if partitioned {
        created = create_ahead(conn, args).await?;
        let cutoff = args
            .retention
            .map(|retention| now - chrono::Duration::from_std(retention).unwrap_or_default());
        applied = retention::apply(conn, cutoff, exporter)
            .await
            .context("applying RETENTION")?;
    } else {
        tracing::warn!(
            "webhook_events is not partitioned (an earlier version's table that had rows); only the keys are trimmed"
        );
    }
    let horizon = chrono::Duration::from_std(args.dedup_horizon).unwrap_or_default();
    let (trimmed, whole) = keys::trim(
        conn,
        now - horizon,
        Duration::from_secs(args.maintain_key_trim_seconds),
    )
    .await
    .context("trimming webhook_event_keys")?;
    sqlx::query(
        "UPDATE webhook_maintenance SET retention = make_interval(secs => $1), last_success = now()",
    )
    .bind(args.retention.map(|r| r.as_secs_f64()))
    .execute(&mut *conn)
    .await
    .context("recording the run")?;
    tracing::info!(
        partitioned,
        created,
        dropped = ?applied.dropped,
        finalized = ?applied.finalized,
        keys_trimmed = trimmed,
        keys_trim_complete = whole,
        "maintenance done"
    );
    Ok(())
}

/// Creates the partitions ahead, trying again while a lock is busy; returns how many.
async fn create_ahead(conn: &mut PgConnection, args: &MaintainArgs) -> anyhow::Result<usize> {
    let settings = args.partitions.settings();
    let mut attempt = 1;
    loop {
        match settings.ensure_ahead(conn, Utc::now()).await {
            Ok(created) => return Ok(created.len()),
            Err(error) if is_not_owner(&error) => {
                return Err(error).context(
                    "creating partitions: DATABASE_URL's role must own webhook_events (use the role `worker migrate` runs as)",
                );
            }
            Err(error) if attempt < CREATE_ATTEMPTS => {
                tracing::info!(%error, attempt, "creating partitions ahead failed; trying again");
                attempt += 1;
                tokio::time::sleep(CREATE_RETRY).await;
            }
            Err(error) => return Err(error).context("creating the partitions ahead"),
        }
    }
}
