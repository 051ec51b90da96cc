//! Time partitions of `webhook_events` (see the README, "The table"): the table is
//! partitioned by range on `received_at`, which ingest stamps once per accepted request, so
//! every redelivery of one message lands in the same partition. Partitions are made ahead
//! by `worker migrate`, by `worker maintain` and by a running worker whose role owns the table
//! (`db/partition_keeper.rs`); a write that meets a missing one has it made on demand, or pauses; it is
//! never dead-lettered for it. `worker maintain` (`maintain.rs`, beside `cli.rs`) also trims the dedup keys
//! (`keys.rs`) and applies the retention (`retention.rs`) without blocking writes. `worker
//! migrate-partitions` (`migrate_partitions.rs`, beside `cli.rs`) moves an earlier version's flat table.

pub(crate) mod catalog;
pub(crate) mod create;
pub(crate) mod export;
pub(crate) mod interval;
pub(crate) mod keeper;
pub(crate) mod keys;
pub(crate) mod retention;

use anyhow::Context as _;
use chrono::Utc;
use sqlx::PgConnection;

use crate::partitions::keeper::PartitionSettings;

/// The check `worker migrate-partitions` puts on the table it is about to attach as the
/// partition of everything before its cutover (see `migrate_partitions.rs`).
pub(crate) const LEGACY_RANGE_CHECK: &str = "webhook_events_legacy_range";

/// Makes the partitions ahead, if the table is partitioned (`worker migrate`, and `worker
/// run` with `RUN_MIGRATIONS`).
pub(crate) async fn prepare(
    conn: &mut PgConnection,
    settings: PartitionSettings,
) -> anyhow::Result<()> {
    if !catalog::is_partitioned(conn).await? {
        tracing::warn!(
            "webhook_events is the flat table of an earlier version (it had rows); it works as it is, and `worker migrate-partitions` moves it to partitions"
        );
        return Ok(());
    }
    let created = settings
        .ensure_ahead(conn, Utc::now())
        .await
        .context("creating the partitions of webhook_events ahead")?;
    tracing::info!(
        created = created.len(),
        interval = %settings.interval,
        ahead = settings.ahead,
        "partitions ready"
    );
    Ok(())
}
