//! Settings of the time partitions of `webhook_events` (for `run`, `migrate` and
//! `maintain`) and of `worker maintain` itself.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use webhook_shared::config::parse_bucket_name;

use crate::config::DatabaseArgs;

/// How partitions are made.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct PartitionArgs {
    /// Width of one partition of webhook_events: day (1d), week (1w, 7d) or month (1mo),
    /// aligned in UTC. Applies to partitions made from now on; existing ones keep their
    /// bounds.
    #[arg(long, env = "PARTITION_INTERVAL", default_value = "day")]
    pub partition_interval: PartitionInterval,

    /// Partitions kept ready after the current one (at least 2), made by `worker maintain`,
    /// by `worker migrate`, and by a running worker whose role owns the table.
    #[arg(long, env = "PARTITIONS_AHEAD", default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=366))]
    pub partitions_ahead: u32,
}

/// How wide one partition of `webhook_events` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PartitionInterval {
    /// A UTC day.
    #[default]
    Day,
    /// An ISO week, Monday to Monday (UTC).
    Week,
    /// A calendar month (UTC).
    Month,
}

/// The values `PARTITION_INTERVAL` accepts.
const ACCEPTED: &str = "day (1d), week (1w, 7d) or month (1mo, 1month)";

impl FromStr for PartitionInterval {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim().to_ascii_lowercase().as_str() {
            "day" | "daily" | "1d" => Ok(Self::Day),
            "week" | "weekly" | "1w" | "7d" => Ok(Self::Week),
            "month" | "monthly" | "1mo" | "1mon" | "1month" => Ok(Self::Month),
            other => Err(format!("`{other}` is not an interval: use {ACCEPTED}")),
        }
    }
}

impl fmt::Display for PartitionInterval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
        })
    }
}

/// The steps, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Step {
    /// Copy the dedup keys of rows within DEDUP_HORIZON.
    Backfill,
    /// Build the new key and the BRIN index concurrently.
    Indexes,
    /// Add and validate the check that bounds the old table at the cutover.
    Constraint,
    /// Make the old table the first partition of the new parent.
    Swap,
}

/// Settings of `worker migrate`.
#[derive(Debug, Clone, clap::Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub partitions: PartitionArgs,
}

/// Settings of `worker maintain`.
#[derive(Debug, Clone, clap::Args)]
pub struct MaintainArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub partitions: PartitionArgs,

    /// Partitions wholly older than this (by received_at) are detached without blocking
    /// writes and dropped, e.g. `90d` or `36h`. Unset: every partition is kept.
    #[arg(long, env = "RETENTION", value_parser = parse_span)]
    pub retention: Option<Duration>,

    /// How long the key of each event is kept (table webhook_event_keys), so that a
    /// provider's retry of it, arriving later in another partition, is still a duplicate.
    /// Beyond it, a retry is stored again. Keep it above the providers' retry windows and
    /// above the queues' retention.
    #[arg(long, env = "DEDUP_HORIZON", default_value = "30d", value_parser = parse_span)]
    pub dedup_horizon: Duration,

    /// S3 bucket that receives each partition before RETENTION drops it: one object per
    /// partition, JSON Lines compressed with gzip, checked (rows and size) before the drop.
    /// Checked at start; unset: partitions are dropped without export.
    #[arg(long, env = "EXPORT_BUCKET", value_parser = parse_bucket_name)]
    pub export_bucket: Option<String>,

    /// Prefix of the exported objects' keys (e.g. `archive/`); the key then is
    /// `{prefix}webhook_events/YYYY/MM/{partition}.jsonl.gz`.
    #[arg(long, env = "EXPORT_PREFIX", default_value = "")]
    pub export_prefix: String,

    /// Longest time one run spends trimming expired keys; the next run goes on where it
    /// stopped.
    #[arg(long, env = "MAINTAIN_KEY_TRIM_SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub maintain_key_trim_seconds: u64,
}

/// Settings of `worker migrate-partitions`.
#[derive(Debug, Clone, clap::Args)]
pub struct MigratePartitionsArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub partitions: PartitionArgs,

    /// Keys of rows received within this span are copied into webhook_event_keys before the
    /// swap (the dedup horizon of `worker maintain`).
    #[arg(long, env = "DEDUP_HORIZON", default_value = "30d", value_parser = parse_span)]
    pub dedup_horizon: Duration,

    /// Stop after this step (the next run goes on from there).
    #[arg(long, value_enum)]
    pub stop_after: Option<Step>,

    /// Print where the migration stands and exit.
    #[arg(long)]
    pub status: bool,
}

/// A span of time like `90d`, `36h` or `2w`, at least an hour.
fn parse_span(text: &str) -> Result<Duration, String> {
    let span = humantime::parse_duration(text)
        .map_err(|error| format!("`{text}` is not a span of time like 90d or 36h: {error}"))?;
    if span < Duration::from_secs(3600) {
        return Err(format!("`{text}` is shorter than an hour"));
    }
    Ok(span)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_parses_and_others_name_the_choices() {
        for (text, interval) in [
            ("day", PartitionInterval::Day),
            ("1d", PartitionInterval::Day),
            ("Week", PartitionInterval::Week),
            ("7d", PartitionInterval::Week),
            ("1w", PartitionInterval::Week),
            ("1mo", PartitionInterval::Month),
            ("month", PartitionInterval::Month),
        ] {
            assert_eq!(text.parse::<PartitionInterval>(), Ok(interval), "{text}");
        }
        let error = "2d"
            .parse::<PartitionInterval>()
            .expect_err("2d is no interval");
        assert!(error.contains("day (1d)"), "{error}");
    }

    #[test]
    fn spans_read_days_hours_and_weeks() {
        assert_eq!(parse_span("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_span("36h"), Ok(Duration::from_secs(36 * 3600)));
        assert_eq!(parse_span("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert!(parse_span("10m").is_err_and(|e| e.contains("shorter than an hour")));
        assert!(parse_span("ninety").is_err_and(|e| e.contains("90d")));
    }
}
