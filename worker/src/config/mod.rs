//! worker's settings and subcommands: every setting a flag with an env var, shown by `--help`.

use std::num::NonZeroU32;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::metrics::{MAX_SOURCES, SourceLabels, check_source_name};

mod database;
mod partitions;
mod redrive;
mod replay;

pub use database::{DatabaseArgs, DatabaseUrl};
pub use partitions::{
    MaintainArgs, MigrateArgs, MigratePartitionsArgs, PartitionArgs, PartitionInterval, Step,
};
pub use redrive::{ActionWithFilter, RedriveArgs};
pub use replay::ReplayArgs;
use webhook_shared::config::{
    LogArgs, MetricsAddrArgs, OpsArgs, QueueArgs, parse_bucket_name, parse_queue_url,
};

/// Long-polls SQS and stores webhooks in PostgreSQL at the pace the database can bear.
#[derive(Debug, Parser)]
#[command(name = "worker", version, about)]
pub struct Cli {
    /// What to do; `run` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub log: LogArgs,
}

/// The worker's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume the queue and store webhooks (the default).
    Run(Box<RunConfig>),
    /// Apply the embedded database migrations, make the partitions ahead, and exit.
    Migrate(MigrateArgs),
    /// Create partitions ahead, trim expired event keys, detach and drop partitions older
    /// than RETENTION, then exit; safe to run on a schedule (one at a time: a second run
    /// exits at once). Needs the role that owns webhook_events.
    Maintain(MaintainArgs),
    /// Move the unpartitioned webhook_events of an earlier version to time partitions while
    /// workers keep writing (the old table becomes the first partition; resumable; a pause of
    /// the writes under a second at the swap). Needs the role that owns webhook_events.
    MigratePartitions(MigratePartitionsArgs),
    /// Run stored events through the handler again, selected by source, time range or ids,
    /// one batch at a time with a resumable cursor (`--dry-run` counts them first).
    Replay(ReplayArgs),
    /// Exit 0 if the worker on METRICS_ADDR answers /healthz, else 1 (no curl needed).
    Healthcheck(HealthcheckArgs),
    /// Move messages from the dead-letter queue back to the main queue and report progress
    /// until the move ends: all of them (StartMessageMoveTask), or those a filter selects;
    /// `--status` and `--cancel` show and stop the move tasks.
    Redrive(Box<RedriveArgs>),
}

/// Settings of `worker healthcheck`.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthcheckArgs {
    /// The ops server to ask.
    #[command(flatten)]
    pub ops: MetricsAddrArgs,
}

/// The dead-letter queue, for `worker run` (its depth, and where refused events go) and
/// `worker redrive` (the source).
#[derive(Debug, Clone, clap::Args)]
pub struct DeadLetterArgs {
    /// URL of the dead-letter queue: where refused events go, whose depth is a metric, and
    /// the source of `worker redrive`. Found from the main queue's RedrivePolicy when absent.
    #[arg(long, env = "DLQ_URL", value_parser = parse_queue_url)]
    pub dlq_url: Option<String>,
}

impl Cli {
    /// Parses the command line; with no subcommand, parses again as `run` so the settings
    /// come from the environment and errors name them.
    pub fn parse_command() -> (Command, LogArgs) {
        let cli = Self::parse();
        match cli.command {
            Some(command) => (command, cli.log),
            None => {
                // Same arguments with `run` inserted: global flags like --log-format still apply.
                let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
                args.insert(1.min(args.len()), "run".into());
                let cli = Self::parse_from(args);
                let command = cli
                    .command
                    .unwrap_or_else(|| unreachable!("`run` was given"));
                (command, cli.log)
            }
        }
    }
}

/// Settings of `worker run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunConfig {
    /// The main queue, consumed.
    #[command(flatten)]
    pub queue: QueueArgs,

    /// The dead-letter queue.
    #[command(flatten)]
    pub dead_letters: DeadLetterArgs,

    /// Most batch writes (transactions) in progress at once, each on its own connection: the
    /// throttle the database sees, and the ceiling of the adaptive limit. At most
    /// DATABASE_MAX_CONNECTIONS; defaults to it.
    #[arg(long, env = "WORKER_CONCURRENCY")]
    pub worker_concurrency: Option<NonZeroU32>,

    /// true: the write limit follows the database's health, between 1 and WORKER_CONCURRENCY
    /// (from write latency against its baseline, pool waits and overload errors); false: it
    /// stays at WORKER_CONCURRENCY.
    #[arg(long, env = "WORKER_ADAPTIVE_CONCURRENCY", default_value_t = true, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub worker_adaptive_concurrency: bool,

    /// Most messages held at once (received, not yet deleted or released); the worker never
    /// asks SQS for more than it has room for. Default: 2 x WORKER_CONCURRENCY x
    /// WORKER_BATCH_MAX_ROWS (a full batch in progress and one waiting per writer), at
    /// least 10 and at most 1000. Memory grows with it times the average message size.
    #[arg(long, env = "WORKER_MAX_IN_FLIGHT")]
    pub worker_max_in_flight: Option<NonZeroU32>,

    /// Most rows (events) written in one transaction. A free writer takes everything
    /// waiting up to this cap, so batches fill up under load and a lone message goes at once.
    #[arg(long, env = "WORKER_BATCH_MAX_ROWS", default_value = "100")]
    pub worker_batch_max_rows: NonZeroU32,

    /// Most body bytes written in one transaction (a single larger message is written alone).
    #[arg(long, env = "WORKER_BATCH_MAX_BYTES", default_value = "4194304")]
    pub worker_batch_max_bytes: NonZeroU32,

    /// Most messages received per second (a rate limit on top of the window); unlimited
    /// when absent. Below 10, each receive asks for this many.
    #[arg(long, env = "MAX_MESSAGES_PER_SECOND")]
    pub max_messages_per_second: Option<NonZeroU32>,

    /// Seconds a message that failed to store stays hidden after its first failed receive;
    /// doubled for each further receive (from ApproximateReceiveCount).
    #[arg(long, env = "RETRY_BACKOFF_BASE_SECONDS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=43_200))]
    pub retry_backoff_base_seconds: u64,

    /// Longest back-off, in seconds (at most 43200, SQS's 12 h visibility limit).
    #[arg(long, env = "RETRY_BACKOFF_MAX_SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=43_200))]
    pub retry_backoff_max_seconds: u64,

    /// Distinct events refused for the same reason (SQLSTATE and constraint) within 10 s,
    /// with at least nine in ten writes refused, at which the refusal fuse trips: the refusals
    /// are taken as the database's condition (a bad constraint or trigger), the worker pauses
    /// (30 s, doubling to 5 min) and releases them instead of dead-lettering them. 0: off.
    #[arg(long, env = "WORKER_REFUSAL_FUSE_THRESHOLD", default_value_t = 10)]
    pub worker_refusal_fuse_threshold: u32,

    /// Seconds between refreshes of the queue depth gauges.
    #[arg(long, env = "QUEUE_METRICS_INTERVAL_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub queue_metrics_interval_seconds: u64,

    /// Sources (comma-separated, at most 100) whose messages get their own `source` label in
    /// the per-source metrics (lag and message age); every other source is `other`, so the
    /// series stay bounded.
    #[arg(long, env = "METRICS_SOURCES", value_delimiter = ',', value_parser = check_source_name)]
    pub metrics_sources: Vec<String>,

    /// Most connections all workers on this database may hold together. The workers agree on
    /// their shares through PostgreSQL (the table webhook_worker_leases): a worker alone may use
    /// up to min(budget - 1, DATABASE_MAX_CONNECTIONS); the shares shrink as workers join and
    /// grow back as they stop (within a heartbeat) or die (within DATABASE_LEASE_SECONDS). One connection of the budget is kept free for a joining worker's
    /// registration. Set the role's CONNECTION LIMIT to it: that stays the hard stop. At least
    /// 2; unset: no shared budget, each worker holds up to DATABASE_MAX_CONNECTIONS.
    #[arg(long, env = "DATABASE_CONNECTION_BUDGET", value_parser = clap::value_parser!(u32).range(2..=100_000))]
    pub database_connection_budget: Option<u32>,

    /// Seconds a worker's share of DATABASE_CONNECTION_BUDGET lasts without renewal (renewed
    /// every quarter of it): how long the shares of a worker that died stay taken.
    #[arg(long, env = "DATABASE_LEASE_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=300))]
    pub database_lease_seconds: u64,

    /// S3 bucket of webhooks too large for SQS (see docs/large-payloads.md). The worker
    /// resolves a pointer whatever bucket it names; when this is set, it checks at start that
    /// the bucket is reachable (HeadBucket) and refuses to start otherwise.
    #[arg(long, env = "LARGE_PAYLOAD_BUCKET", value_parser = parse_bucket_name)]
    pub large_payload_bucket: Option<String>,

    /// Most bytes of offloaded webhooks (S3 objects, counted at the size their pointers
    /// declare) fetched and held at once, across all writes; a batch waits for room before
    /// fetching, and an object larger than this waits for all of it. Memory for them stays
    /// below about 4 x this (see docs/large-payloads.md). At least WORKER_BATCH_MAX_BYTES.
    #[arg(long, env = "WORKER_MAX_FETCHED_BYTES", default_value = "67108864")]
    pub worker_max_fetched_bytes: NonZeroU32,

    /// Apply pending database migrations at start instead of refusing to run without them.
    #[arg(long, env = "RUN_MIGRATIONS", default_value_t = false)]
    pub run_migrations: bool,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub partitions: PartitionArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub ops: OpsArgs,
}

/// A setting that contradicts another, found at start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// More writes than connections: a write would wait for a connection, unseen.
    #[error(
        "WORKER_CONCURRENCY ({concurrency}) may not exceed DATABASE_MAX_CONNECTIONS ({connections}): each batch write in progress holds its own connection"
    )]
    ConcurrencyAboveConnections {
        /// WORKER_CONCURRENCY.
        concurrency: u32,
        /// DATABASE_MAX_CONNECTIONS.
        connections: u32,
    },
    /// A fetch budget smaller than a batch: a batch of pointers would exceed it.
    #[error(
        "WORKER_MAX_FETCHED_BYTES ({budget}) may not be below WORKER_BATCH_MAX_BYTES ({batch}): a batch of offloaded webhooks must fit in it"
    )]
    FetchBudgetBelowBatch {
        /// WORKER_MAX_FETCHED_BYTES.
        budget: u32,
        /// WORKER_BATCH_MAX_BYTES.
        batch: u32,
    },
    /// More per-source labels than the bound.
    #[error("METRICS_SOURCES lists {listed} sources; at most {MAX_SOURCES} get their own label")]
    TooManyMetricsSources {
        /// How many were listed.
        listed: usize,
    },
    /// A call deadline at or below the statement timeout: a slow statement would count as an
    /// unreachable database.
    #[error(
        "DATABASE_TRANSACTION_TIMEOUT_MS ({transaction_ms}) must be above DATABASE_STATEMENT_TIMEOUT_MS ({statement_ms}): PostgreSQL must cancel a slow statement before the worker gives up on its connection"
    )]
    TransactionTimeout {
        /// DATABASE_TRANSACTION_TIMEOUT_MS.
        transaction_ms: u64,
        /// DATABASE_STATEMENT_TIMEOUT_MS.
        statement_ms: u64,
    },
}

/// Smallest and largest derived WORKER_MAX_IN_FLIGHT.
const DERIVED_WINDOW: (u32, u32) = (10, 1000);

impl RunConfig {
    /// WORKER_CONCURRENCY, or DATABASE_MAX_CONNECTIONS when unset; an error if above it.
    pub fn write_limit(&self) -> Result<u32, ConfigError> {
        let connections = self.database.database_max_connections.get();
        let concurrency = self.worker_concurrency.map_or(connections, NonZeroU32::get);
        if concurrency > connections {
            return Err(ConfigError::ConcurrencyAboveConnections {
                concurrency,
                connections,
            });
        }
        Ok(concurrency)
    }

    /// WORKER_MAX_IN_FLIGHT, or its derived default (see `--help`).
    pub fn max_in_flight(&self) -> Result<u32, ConfigError> {
        if let Some(window) = self.worker_max_in_flight {
            return Ok(window.get());
        }
        let derived = 2u32
            .saturating_mul(self.write_limit()?)
            .saturating_mul(self.worker_batch_max_rows.get());
        Ok(derived.clamp(DERIVED_WINDOW.0, DERIVED_WINDOW.1))
    }

    /// WORKER_MAX_FETCHED_BYTES; an error if below WORKER_BATCH_MAX_BYTES.
    pub fn max_fetched_bytes(&self) -> Result<NonZeroU32, ConfigError> {
        let (budget, batch) = (self.worker_max_fetched_bytes, self.worker_batch_max_bytes);
        if budget < batch {
            return Err(ConfigError::FetchBudgetBelowBatch {
                budget: budget.get(),
                batch: batch.get(),
            });
        }
        Ok(budget)
    }

    /// The lease period of the connection budget.
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.database_lease_seconds)
    }

    /// The labels of the per-source metrics; an error beyond [`MAX_SOURCES`] names.
    pub(crate) fn source_labels(&self) -> Result<SourceLabels, ConfigError> {
        if self.metrics_sources.len() > MAX_SOURCES {
            return Err(ConfigError::TooManyMetricsSources {
                listed: self.metrics_sources.len(),
            });
        }
        Ok(SourceLabels::new(&self.metrics_sources))
    }

    /// The queue metrics refresh interval.
    pub fn queue_metrics_interval(&self) -> Duration {
        Duration::from_secs(self.queue_metrics_interval_seconds)
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
