//! The running worker's side of partitioning: at start and every ten minutes its keeper
//! creates the partitions `PARTITIONS_AHEAD` intervals ahead (if its role owns the table;
//! otherwise it only reports, and `worker maintain` creates them) and sets the partition
//! gauges. When a write meets a missing partition anyway, the store asks it to
//! [`Keeper::cover`] the batch's times (see `db/store.rs`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;

use crate::db::connections::{self, Connections};
use crate::db::errors::{Failure, classify};
use crate::metrics;
use crate::partitions::catalog;
use crate::partitions::create::ensure_covered;
use crate::partitions::keeper::{PartitionSettings, is_not_owner, report};

/// How often the keeper creates partitions ahead and refreshes the gauges.
pub(crate) const KEEP_PERIOD: Duration = Duration::from_secs(600);

/// Creates partitions ahead and keeps the gauges.
#[derive(Debug, Clone)]
pub(crate) struct Keeper {
    settings: PartitionSettings,
    connections: Connections,
}

impl Keeper {
    /// A keeper working on `connections` (within the gate, like the writes).
    pub(crate) fn new(settings: PartitionSettings, connections: Connections) -> Self {
        Self {
            settings,
            connections,
        }
    }

    /// Keeps partitions ahead every [`KEEP_PERIOD`] until `shutdown`.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(KEEP_PERIOD);
        while shutdown.run_until_cancelled(ticks.tick()).await.is_some() {
            // Never holds up the shutdown: a round may wait for a connection (all of them
            // busy with writes) or for a lock.
            match shutdown.run_until_cancelled(self.keep_once()).await {
                None => break,
                Some(Err(error)) => {
                    tracing::warn!(%error, "checking the partitions of webhook_events failed");
                }
                Some(Ok(())) => {}
            }
        }
    }

    /// Creates what is missing ahead (if allowed) and refreshes the gauges.
    pub(crate) async fn keep_once(&self) -> anyhow::Result<()> {
        let mut conn = self.connections.acquire().await?;
        let result = keep(&mut conn, self.settings).await;
        let outcome = match &result {
            Err(error) => match error.downcast_ref::<sqlx::Error>() {
                Some(sqlx_error) => Err(classify(sqlx_error)),
                None => Err(Failure::Transient),
            },
            Ok(()) => Ok(()),
        };
        connections::release(conn, outcome).await;
        result
    }

    /// Creates the partitions of the intervals that hold `received`, in one step each;
    /// `Err` when one cannot be made (the role may not, or a lock was held).
    pub(crate) async fn cover(
        &self,
        conn: &mut PgConnection,
        received: &[DateTime<Utc>],
    ) -> Result<(), sqlx::Error> {
        let interval = self.settings.interval;
        let mut starts: Vec<DateTime<Utc>> =
            received.iter().map(|&at| interval.floor(at)).collect();
        starts.sort_unstable();
        starts.dedup();
        for start in starts {
            ensure_covered(conn, interval, start, interval.next(start)).await?;
        }
        Ok(())
    }

    /// The latest time a row may carry and still get a partition made for it on demand: the
    /// end of the range kept ready. Later ones are a clock fault upstream.
    pub(crate) fn latest_accepted(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.settings.ready_until(now)
    }
}

/// One round of the keeper on `conn`.
async fn keep(conn: &mut PgConnection, settings: PartitionSettings) -> anyhow::Result<()> {
    let partitioned = catalog::is_partitioned(conn).await?;
    metrics::gauge_table_partitioned(partitioned);
    if !partitioned {
        return Ok(());
    }
    let now = Utc::now();
    match settings.ensure_ahead(conn, now).await {
        Ok(_) => {}
        Err(error) if is_not_owner(&error) => tracing::warn!(
            "this worker's role may not create partitions of webhook_events (it does not own the table); run `worker maintain` as the owner on a schedule"
        ),
        Err(error) => {
            tracing::warn!(%error, "creating partitions ahead failed; trying again later")
        }
    }
    report(conn, now).await
}
