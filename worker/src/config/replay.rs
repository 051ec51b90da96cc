//! Settings of `worker replay`.

use std::num::NonZeroU32;

use chrono::{DateTime, Utc};

use crate::config::DatabaseArgs;
use crate::metrics::check_source_name;

/// Settings of `worker replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub database: DatabaseArgs,

    /// Only events of this source.
    #[arg(long, value_parser = check_source_name)]
    pub source: Option<String>,

    /// Only events received at or after this time (RFC 3339, e.g. 2026-12-01T00:00:00Z).
    #[arg(long)]
    pub from: Option<DateTime<Utc>>,

    /// Only events received before this time (RFC 3339).
    #[arg(long)]
    pub to: Option<DateTime<Utc>>,

    /// Only this event, as SOURCE/ID (repeatable; with ids, --source, --from and --to are
    /// refused, and no cursor is kept).
    #[arg(long = "id", value_parser = parse_event_id, conflicts_with_all = ["source", "from", "to"])]
    pub ids: Vec<(String, String)>,

    /// Count what would be replayed, per partition, and change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Name of the resumable cursor (table webhook_replay_cursors); default: the selection
    /// itself, so the same command goes on where it stopped.
    #[arg(long)]
    pub cursor: Option<String>,

    /// Start the cursor over from the beginning.
    #[arg(long)]
    pub restart: bool,

    /// Events per transaction (a page).
    #[arg(long, env = "REPLAY_BATCH_SIZE", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub batch_size: u32,

    /// Most replay transactions in progress at once, each on a connection of its own: the
    /// workers' adaptive limit moves between 1 and this (starting at 1, doubling while the
    /// database stays fast), within the connection grant.
    #[arg(long, env = "REPLAY_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub concurrency: u32,

    /// Most events replayed per second, on top of the adaptive limit; as fast as the limit
    /// allows when absent.
    #[arg(long, env = "REPLAY_MAX_PER_SECOND")]
    pub max_per_second: Option<NonZeroU32>,

    /// Most connections all workers (and replays) on this database may hold together, as for
    /// `worker run`: the replay joins their lease and asks for --concurrency connections of
    /// the budget (at most the budget less one), and never holds more than it is granted.
    #[arg(long, env = "DATABASE_CONNECTION_BUDGET", value_parser = clap::value_parser!(u32).range(2..=100_000))]
    pub database_connection_budget: Option<u32>,

    /// Seconds a share of DATABASE_CONNECTION_BUDGET lasts without renewal, as for `worker run`.
    #[arg(long, env = "DATABASE_LEASE_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=300))]
    pub database_lease_seconds: u64,

    /// Seconds between progress lines.
    #[arg(long, env = "REPLAY_PROGRESS_INTERVAL_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub progress_interval_seconds: u64,
}

/// `SOURCE/ID`.
fn parse_event_id(text: &str) -> Result<(String, String), String> {
    let (source, id) = text
        .split_once('/')
        .filter(|(s, i)| !s.is_empty() && !i.is_empty())
        .ok_or_else(|| format!("`{text}` is not SOURCE/ID"))?;
    Ok((source.to_owned(), id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_id_is_source_slash_id() {
        assert_eq!(
            parse_event_id("github/72d3162e-cc78"),
            Ok(("github".into(), "72d3162e-cc78".into()))
        );
        // Ids may hold slashes; the source may not.
        assert_eq!(parse_event_id("s/a/b"), Ok(("s".into(), "a/b".into())));
        assert!(parse_event_id("no-slash").is_err());
        assert!(parse_event_id("/id").is_err());
    }
}
