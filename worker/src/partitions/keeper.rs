//! How partitions are kept ready ([`PartitionSettings`]: the interval and how many ahead) and
//! the partition gauges ([`report`]); the running worker's keeper that uses them is in
//! `db/partition_keeper.rs`.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::config::PartitionArgs;
use crate::config::PartitionInterval;
use crate::metrics;
use crate::partitions::catalog::{self, Partition};
use crate::partitions::create::ensure_covered;

/// How partitions are made: their width and how many are kept ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PartitionSettings {
    /// Width of one partition.
    pub(crate) interval: PartitionInterval,
    /// Partitions kept ready after the current one.
    pub(crate) ahead: u32,
}

impl PartitionSettings {
    /// The end of the range kept ready at `now`: the current interval and `ahead` more.
    pub(crate) fn ready_until(self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.interval.advance(now, self.ahead + 1)
    }

    /// Makes sure the range kept ready at `now` is covered; returns what it created.
    pub(crate) async fn ensure_ahead(
        self,
        conn: &mut PgConnection,
        now: DateTime<Utc>,
    ) -> Result<Vec<Partition>, sqlx::Error> {
        ensure_covered(conn, self.interval, now, self.ready_until(now)).await
    }
}

impl PartitionArgs {
    /// The settings the partition code takes.
    pub(crate) fn settings(self) -> PartitionSettings {
        PartitionSettings {
            interval: self.partition_interval,
            ahead: self.partitions_ahead,
        }
    }
}

/// Whether `error` is a refusal of DDL rights (the role does not own the table).
pub(crate) fn is_not_owner(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "42501")
}

/// Sets the partition gauges from the catalog and from what `worker maintain` recorded.
pub(crate) async fn report(conn: &mut PgConnection, now: DateTime<Utc>) -> anyhow::Result<()> {
    let partitions = catalog::partitions(conn).await?;
    let ahead = catalog::covered_until(&partitions, now).map_or(0.0, |end| {
        (end - now).num_milliseconds().max(0) as f64 / 1000.0
    });
    let oldest = partitions
        .iter()
        .filter_map(|p| p.from)
        .min()
        .map_or(0.0, |from| (now - from).num_seconds().max(0) as f64);
    let (retention, last_success): (Option<f64>, Option<DateTime<Utc>>) = sqlx::query_as(
        "SELECT extract(epoch FROM retention)::float8, last_success FROM webhook_maintenance",
    )
    .fetch_optional(&mut *conn)
    .await?
    .unwrap_or_default();
    metrics::gauge_partitions(
        ahead,
        oldest,
        retention.unwrap_or(0.0),
        last_success.map(|at| at.timestamp() as f64),
    );
    Ok(())
}
