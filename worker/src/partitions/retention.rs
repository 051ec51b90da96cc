//! Retention: partitions wholly older than `RETENTION` are detached with `DETACH PARTITION …
//! CONCURRENTLY` (SHARE UPDATE EXCLUSIVE on the parent: inserts go on) and dropped. Each
//! step is written to `webhook_partition_log` first, so a run cut short (killed, or the
//! detach cancelled by its timeout, which leaves it pending) is finished by the next: a
//! pending detach is `FINALIZE`d, a detached table dropped.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::partitions::catalog::{self, Partition};
use crate::partitions::export::Exporter;

/// Longest time one detach may take: it waits for every transaction that uses the table.
/// Cut short, it stays pending and the next run finishes it.
const DETACH_TIMEOUT: Duration = Duration::from_secs(600);

/// What one run of the retention did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Applied {
    /// Partitions dropped.
    pub(crate) dropped: Vec<String>,
    /// Pending detaches finished.
    pub(crate) finalized: Vec<String>,
}

/// Finishes what an earlier run left (pending detaches, detached tables not dropped), then
/// detaches and drops every partition wholly before `cutoff`.
pub(crate) async fn apply(
    conn: &mut PgConnection,
    cutoff: Option<DateTime<Utc>>,
    exporter: Option<&Exporter>,
) -> anyhow::Result<Applied> {
    let mut applied = Applied::default();
    // At most one partition may be pending detach, and it blocks writes to its range.
    for pending in catalog::partitions(conn)
        .await?
        .into_iter()
        .filter(|p| p.detach_pending)
    {
        if cutoff.is_some_and(|cutoff| pending.to.is_some_and(|to| to <= cutoff)) {
            log_detaching(conn, &pending).await?;
        }
        run_alone(
            conn,
            &format!(
                "ALTER TABLE webhook_events DETACH PARTITION \"{}\" FINALIZE",
                pending.name
            ),
        )
        .await?;
        applied.finalized.push(pending.name);
    }
    let attached: Vec<String> = catalog::partitions(conn)
        .await?
        .into_iter()
        .map(|p| p.name)
        .collect();
    let unfinished: Vec<(String, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT partition, range_from FROM webhook_partition_log WHERE state IN ('detaching', 'exported')",
    )
    .fetch_all(&mut *conn)
    .await?;
    for (name, from) in unfinished {
        if !attached.contains(&name) {
            finish_detached(conn, &name, from, exporter).await?;
            applied.dropped.push(name);
        }
    }
    let Some(cutoff) = cutoff else {
        return Ok(applied);
    };
    for partition in expired(&catalog::partitions(conn).await?, cutoff) {
        log_detaching(conn, &partition).await?;
        sqlx::query(&format!(
            "SET statement_timeout = '{}s'",
            DETACH_TIMEOUT.as_secs()
        ))
        .execute(&mut *conn)
        .await?;
        let started = std::time::Instant::now();
        let detached = run_alone(
            conn,
            &format!(
                "ALTER TABLE webhook_events DETACH PARTITION \"{}\" CONCURRENTLY",
                partition.name
            ),
        )
        .await;
        sqlx::query("RESET statement_timeout")
            .execute(&mut *conn)
            .await?;
        detached?;
        tracing::info!(
            partition = partition.name,
            elapsed_ms = started.elapsed().as_millis(),
            "partition detached"
        );
        finish_detached(conn, &partition.name, partition.from, exporter).await?;
        applied.dropped.push(partition.name);
    }
    Ok(applied)
}

/// The partitions whose whole range lies before `cutoff`, oldest first (never one pending
/// detach, never one open-ended).
pub(crate) fn expired(partitions: &[Partition], cutoff: DateTime<Utc>) -> Vec<Partition> {
    partitions
        .iter()
        .filter(|p| !p.detach_pending && p.to.is_some_and(|to| to <= cutoff))
        .cloned()
        .collect()
}

/// Records that `partition` is being detached, before the detach starts.
async fn log_detaching(conn: &mut PgConnection, partition: &Partition) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO webhook_partition_log (partition, range_from, range_to, state)
         VALUES ($1, $2, $3, 'detaching')
         ON CONFLICT (partition) DO UPDATE SET state = 'detaching', range_from = $2, range_to = $3, updated_at = now()",
    )
    .bind(&partition.name)
    .bind(partition.from)
    .bind(partition.to)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Exports a detached partition (when there is an exporter and it was not exported yet),
/// then drops it.
async fn finish_detached(
    conn: &mut PgConnection,
    name: &str,
    from: Option<DateTime<Utc>>,
    exporter: Option<&Exporter>,
) -> anyhow::Result<()> {
    if let Some(exporter) = exporter {
        let exported: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT FROM webhook_partition_log WHERE partition = $1 AND state = 'exported')",
        )
        .bind(name)
        .fetch_one(&mut *conn)
        .await?;
        if !exported {
            let started = std::time::Instant::now();
            let export = exporter.export(conn, name, from).await?;
            sqlx::query(
                "UPDATE webhook_partition_log SET state = 'exported', object_key = $2, rows = $3, updated_at = now()
                 WHERE partition = $1",
            )
            .bind(name)
            .bind(&export.key)
            .bind(export.rows)
            .execute(&mut *conn)
            .await?;
            tracing::info!(partition = name, key = export.key, rows = export.rows, bytes = export.bytes, elapsed = ?started.elapsed(), "partition exported");
        }
    }
    drop_detached(conn, name).await?;
    Ok(())
}

/// Drops a detached partition and records it.
async fn drop_detached(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    let started = std::time::Instant::now();
    sqlx::raw_sql(&format!("DROP TABLE IF EXISTS \"{name}\""))
        .execute(&mut *conn)
        .await?;
    let elapsed_ms = started.elapsed().as_millis();
    sqlx::query(
        "UPDATE webhook_partition_log SET state = 'dropped', updated_at = now() WHERE partition = $1",
    )
    .bind(name)
    .execute(&mut *conn)
    .await?;
    tracing::info!(partition = name, elapsed_ms, "partition dropped");
    Ok(())
}

/// Runs one statement on its own, outside any transaction block (the simple query protocol
/// with a single statement), as `DETACH … CONCURRENTLY` and `FINALIZE` require.
async fn run_alone(conn: &mut PgConnection, statement: &str) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(statement).execute(conn).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(from: &str, to: Option<&str>, pending: bool) -> Partition {
        Partition {
            name: from.into(),
            from: from.parse().ok(),
            to: to.and_then(|to| to.parse().ok()),
            detach_pending: pending,
        }
    }

    #[test]
    fn only_wholly_older_partitions_expire() {
        let cutoff: DateTime<Utc> = "2026-09-07T12:00:00Z".parse().unwrap_or_default();
        let partitions = [
            partition("2026-09-06T00:00:00Z", Some("2026-09-07T00:00:00Z"), false),
            partition("2026-09-07T00:00:00Z", Some("2026-09-08T00:00:00Z"), false),
            partition("2026-09-05T00:00:00Z", Some("2026-09-06T00:00:00Z"), true),
            partition("2026-09-01T00:00:00Z", None, false),
        ];
        let names: Vec<String> = expired(&partitions, cutoff)
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, ["2026-09-06T00:00:00Z"]);
    }
}
