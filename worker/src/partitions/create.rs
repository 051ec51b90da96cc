//! Creating partitions without stopping writes: each one is made as a plain table (`CREATE
//! TABLE … (LIKE webhook_events …)`) and then attached, which takes only SHARE UPDATE
//! EXCLUSIVE on the parent, a lock the workers' inserts do not wait for. (`CREATE TABLE …
//! PARTITION OF` would take ACCESS EXCLUSIVE on the parent: every insert would queue behind
//! it.) Creators are serialized by a transaction-level advisory lock and read the catalog
//! under it, so two of them never make overlapping partitions; every piece is clipped to what
//! no partition covers yet, whatever interval made the neighbours.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::{Connection as _, PgConnection};

use crate::config::PartitionInterval;
use crate::partitions::catalog::{self, Partition};
use crate::partitions::interval::partition_name;

/// The advisory lock every creator and `worker maintain` take ("swpartns").
pub(crate) const PARTITION_LOCK: i64 = 0x7377_7061_7274_6e73;

/// Longest wait for a lock while creating partitions: a wait in the lock queue on the
/// parent would hold up the inserts queued behind it.
pub(crate) const DDL_LOCK_TIMEOUT: Duration = Duration::from_millis(500);

/// Makes sure partitions cover `[floor(from), to)` in `interval` steps; returns the
/// partitions it created. One transaction: all or none.
pub(crate) async fn ensure_covered(
    conn: &mut PgConnection,
    interval: PartitionInterval,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Partition>, sqlx::Error> {
    let mut tx = conn.begin().await?;
    sqlx::query(&format!(
        "SET LOCAL lock_timeout = '{}ms'",
        DDL_LOCK_TIMEOUT.as_millis()
    ))
    .execute(&mut *tx)
    .await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(PARTITION_LOCK)
        .execute(&mut *tx)
        .await?;
    let existing = catalog::partitions(&mut tx).await?;
    let mut created = Vec::new();
    for (slot_from, slot_to) in interval.slots(from, to) {
        for (lo, hi) in catalog::gaps(&existing, slot_from, slot_to) {
            let name = partition_name(lo);
            for statement in create_statements(&name, lo, hi) {
                sqlx::query(&statement).execute(&mut *tx).await?;
            }
            created.push(Partition {
                name,
                from: Some(lo),
                to: Some(hi),
                detach_pending: false,
            });
        }
    }
    tx.commit().await?;
    for partition in &created {
        tracing::info!(partition = partition.name, from = ?partition.from, to = ?partition.to, "partition created");
    }
    Ok(created)
}

/// The two statements that make and attach one partition (names and bounds are made here,
/// never taken from input).
fn create_statements(name: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> [String; 2] {
    let (from, to) = (
        from.to_rfc3339_opts(SecondsFormat::Secs, true),
        to.to_rfc3339_opts(SecondsFormat::Secs, true),
    );
    [
        format!(
            "CREATE TABLE \"{name}\" (LIKE webhook_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE)"
        ),
        format!(
            "ALTER TABLE webhook_events ATTACH PARTITION \"{name}\" FOR VALUES FROM ('{from}') TO ('{to}')"
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partition_is_made_alone_then_attached() {
        let from = "2026-12-06T00:00:00Z".parse().unwrap_or_default();
        let to = "2026-12-07T00:00:00Z".parse().unwrap_or_default();
        let sql = create_statements("webhook_events_p20261206", from, to).join(";\n");
        assert!(sql.contains("CREATE TABLE \"webhook_events_p20261206\" (LIKE webhook_events"));
        assert!(!sql.contains("PARTITION OF"), "{sql}");
        assert!(
            sql.contains("FOR VALUES FROM ('2026-12-06T00:00:00Z') TO ('2026-12-07T00:00:00Z')"),
            "{sql}"
        );
    }
}
