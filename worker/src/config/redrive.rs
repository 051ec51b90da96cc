//! Settings of `worker redrive`: the queues, the pace, the filters that select which
//! dead-lettered messages go back, and the `--status` and `--cancel` actions.

use chrono::{DateTime, Utc};
use webhook_shared::config::QueueArgs;

use super::DeadLetterArgs;

/// Settings of `worker redrive`.
#[derive(Debug, Clone, clap::Args)]
pub struct RedriveArgs {
    /// The main queue (the destination).
    #[command(flatten)]
    pub queue: QueueArgs,

    /// The dead-letter queue (the source).
    #[command(flatten)]
    pub dead_letters: DeadLetterArgs,

    /// Most messages moved per second (up to 500), so a large DLQ does not flood the
    /// database: SQS's MaxNumberOfMessagesPerSecond for a whole move, the pace of the sends
    /// for a filtered one; SQS's own pace (unlimited when filtered) when absent.
    #[arg(long = "max-per-second", visible_alias = "max", env = "REDRIVE_MAX_PER_SECOND", value_parser = clap::value_parser!(i32).range(1..=500))]
    pub max_per_second: Option<i32>,

    /// Seconds between progress reports.
    #[arg(long, env = "REDRIVE_PROGRESS_INTERVAL_SECONDS", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub progress_interval_seconds: u64,

    /// Print the DLQ's recent message move tasks (status, messages moved and to move, start
    /// time, failure reason) and exit.
    #[arg(long, conflicts_with = "cancel")]
    pub status: bool,

    /// Cancel the DLQ's running message move task (the messages moved so far stay moved) and
    /// exit; exit 0 with a message when none is running.
    #[arg(long)]
    pub cancel: bool,

    /// Move only the messages of these sources (the envelope's source; repeat the flag or
    /// separate with commas). Any filter makes the redrive a scan of the DLQ (receive, send the
    /// matching ones to the main queue, delete them) instead of one StartMessageMoveTask.
    #[arg(long = "source", env = "REDRIVE_SOURCE", value_delimiter = ',')]
    pub sources: Vec<String>,

    /// Move only the messages whose `poison_reason` (the worker's reason for dead-lettering
    /// them) starts with this; `max-receives` selects those SQS moved itself after
    /// maxReceiveCount receives, which carry no reason.
    #[arg(long, env = "REDRIVE_REASON")]
    pub reason: Option<String>,

    /// Move only the messages received at or after this time (RFC 3339, e.g.
    /// 2024-05-01T12:00:00Z): the envelope's received_at, else the message's SentTimestamp.
    #[arg(long, env = "REDRIVE_FROM", value_parser = parse_time)]
    pub from: Option<DateTime<Utc>>,

    /// Move only the messages received before this time (RFC 3339), as --from.
    #[arg(long, env = "REDRIVE_TO", value_parser = parse_time)]
    pub to: Option<DateTime<Utc>>,

    /// Scan the DLQ and count the messages the filters select, by source and reason; move
    /// nothing and give every message back.
    #[arg(long, env = "REDRIVE_DRY_RUN", default_value_t = false)]
    pub dry_run: bool,

    /// Filtered redrive and --dry-run: seconds each message received from the DLQ stays
    /// hidden while the scan goes on (those the filters leave are given back at its end, and
    /// come back on their own after this if the scan is killed). Longer than the scan, or it
    /// meets them again and stops early (run it again to go on).
    #[arg(long, env = "REDRIVE_SCAN_VISIBILITY_SECONDS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(30..=43_200))]
    pub scan_visibility_seconds: u64,
}

impl RedriveArgs {
    /// Whether a filter is set, or --dry-run: the redrive scans the DLQ instead of starting
    /// a move task.
    pub fn scans(&self) -> bool {
        self.dry_run
            || !self.sources.is_empty()
            || self.reason.is_some()
            || self.from.is_some()
            || self.to.is_some()
    }
}

/// `--status` or `--cancel` with a filter or `--dry-run` (checked on the values, so
/// `REDRIVE_DRY_RUN=false` is no conflict).
#[derive(Debug, thiserror::Error)]
#[error("--status and --cancel take no filter (--source, --reason, --from, --to) and no --dry-run")]
pub struct ActionWithFilter;

impl RedriveArgs {
    /// An error when `--status` or `--cancel` comes with a filter or `--dry-run`.
    pub fn check(&self) -> Result<(), ActionWithFilter> {
        if (self.status || self.cancel) && self.scans() {
            return Err(ActionWithFilter);
        }
        Ok(())
    }
}

/// An RFC 3339 time, as UTC.
fn parse_time(value: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(value)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|error| format!("not an RFC 3339 time (e.g. 2024-05-01T12:00:00Z): {error}"))
}
