//! Start-up, step by step: prepare the database (migrations or their check, on a connection
//! of its own), open the connections the writes use (a pool, or the leased pool and its
//! lease with a connection budget), build the S3 client and check the bucket, and work out
//! the pipeline's settings from the configuration and the queue. `run_with` in `lib.rs`
//! calls these in order, logs the start, then runs.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use webhook_shared::large_payload::{self, S3Timeouts};
use webhook_shared::sqs::{self as sdk_sqs, ClientTimeouts};

use crate::config::RunConfig;
use crate::db;
use crate::db::connections::Connections;
use crate::db::handler::Handler;
use crate::fleet::{self, Lease};
use crate::pipeline::PipelineSettings;
use crate::pipeline::batch_context::RetryBackoff;
use crate::pipeline::s3_health::S3Health;
use crate::pipeline::write_queue::BatchCaps;
use crate::s3::{ObjectError, S3Objects};
use crate::sqs::admin::SqsAdmin;
use crate::sqs::queue_info::{self, QueueInfo};

/// Time allowed for one S3 attempt, up to the response headers (the body is read under its
/// own timeout, see `s3/mod.rs`).
const S3_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Shortest time a received message stays hidden, whatever the queue's VisibilityTimeout
/// (SQS allows 0, which would hand every held message to other consumers at once).
const MIN_VISIBILITY: Duration = Duration::from_secs(5);

/// The limits the configuration sets on one worker, checked once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Most batch writes at once (`WORKER_CONCURRENCY`).
    pub(crate) writes: u32,
    /// Most messages held (`WORKER_MAX_IN_FLIGHT`).
    pub(crate) window: u32,
    /// Most fetched payload bytes held at once.
    pub(crate) fetched_bytes: NonZeroU32,
    /// Longest time one transaction, probe or look-up may take once it has its connection.
    pub(crate) transaction: Duration,
}

impl Limits {
    /// The limits of `config`, or the setting that is wrong.
    pub(crate) fn of(config: &RunConfig) -> anyhow::Result<Self> {
        Ok(Self {
            writes: config.write_limit()?,
            window: config.max_in_flight()?,
            fetched_bytes: config.max_fetched_bytes()?,
            transaction: config.database.transaction_timeout()?,
        })
    }
}

/// Time allowed for one SQS call: the 20 s long poll plus a margin.
const SQS_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// What start-up made, ready to run.
pub(crate) struct Started {
    /// The limits in force.
    pub(crate) limits: Limits,
    /// The connections the writes use.
    pub(crate) connections: Connections,
    /// The lease that sizes them (with a connection budget).
    pub(crate) lease: Option<Lease>,
    /// The SQS client.
    pub(crate) sqs: aws_sdk_sqs::Client,
    /// Queue attributes and depths.
    pub(crate) admin: SqsAdmin,
    /// Where offloaded webhooks are.
    pub(crate) objects: Arc<S3Objects>,
    /// S3's breaker.
    pub(crate) s3_health: Arc<S3Health>,
    /// What the queue said of itself.
    pub(crate) queue: QueueInfo,
    /// The pipeline's settings.
    pub(crate) settings: PipelineSettings,
}

/// Every step of the start, in order: check the settings, prepare the database, open the
/// connections, build the clients, ask the queue, work out the settings, log them.
pub(crate) async fn start<H: Handler>(config: &RunConfig, handler: &H) -> anyhow::Result<Started> {
    let limits = Limits::of(config)?;
    let queue_url = config.queue.url()?;
    let identity = config
        .database_connection_budget
        .map(|_| fleet::Identity::new());
    prepare_database(config, handler).await?;
    let (connections, lease) = connections(config, identity)?;
    let sqs = sdk_sqs::client(ClientTimeouts {
        attempt: SQS_ATTEMPT_TIMEOUT,
        max_attempts: 3,
    })
    .await;
    let admin = SqsAdmin::new(sqs.clone());
    let (objects, s3_health) = objects(config, limits).await?;
    let queue = queue_info::discover(&admin, queue_url, config.dead_letters.dlq_url.clone()).await;
    let settings = pipeline_settings(config, limits, &queue);
    log_start(config, limits, &settings, &queue, identity);
    Ok(Started {
        limits,
        connections,
        lease,
        sqs,
        admin,
        objects,
        s3_health,
        queue,
        settings,
    })
}

/// Applies the migrations (with `RUN_MIGRATIONS`) or checks that they are applied, then
/// runs the handler's, on a connection of its own closed right after: with a budget, the
/// worker has no share of it yet.
async fn prepare_database<H: Handler>(config: &RunConfig, handler: &H) -> anyhow::Result<()> {
    let mut conn = db::connect(&config.database).await?;
    let prepared = async {
        if config.run_migrations {
            db::migrate(&mut conn).await?;
            crate::partitions::prepare(&mut conn, config.partitions.settings()).await?;
        } else {
            db::ensure_migrated(&mut conn).await?;
        }
        db::migrate_handler(&mut conn, handler).await
    }
    .await;
    let _ = sqlx::Connection::close(conn).await;
    prepared
}

/// The connections the writes use: with `DATABASE_CONNECTION_BUDGET`, a leased pool and the
/// lease that sizes it; otherwise the same pool behind a gate of `DATABASE_MAX_CONNECTIONS`.
fn connections(
    config: &RunConfig,
    identity: Option<fleet::Identity>,
) -> anyhow::Result<(Connections, Option<Lease>)> {
    let max_connections = config.database.database_max_connections.get();
    let budget = config
        .database_connection_budget
        .map(|budget| (budget, config.lease()));
    let wanted = budget.map_or(max_connections, |(budget, _)| {
        (budget - 1).min(max_connections)
    });
    db::connections::shared(&config.database, budget, identity, wanted)
}

/// The S3 client and S3's breaker. A missing `LARGE_PAYLOAD_BUCKET` stops the start; an
/// unreachable one is an outage: the worker starts with the breaker open, small webhooks
/// flow and pointers wait.
async fn objects(
    config: &RunConfig,
    limits: Limits,
) -> anyhow::Result<(Arc<S3Objects>, Arc<S3Health>)> {
    let objects = Arc::new(S3Objects::new(
        large_payload::s3_client(S3Timeouts {
            attempt: S3_ATTEMPT_TIMEOUT,
            max_attempts: 3,
        })
        .await,
    ));
    let s3_health = Arc::new(S3Health::new(limits.window as usize / 2));
    if let Some(bucket) = &config.large_payload_bucket {
        match objects.check_bucket(bucket).await {
            Ok(()) => {}
            Err(ObjectError::Gone) => {
                anyhow::bail!("LARGE_PAYLOAD_BUCKET {bucket}: no such bucket");
            }
            Err(error) => s3_health.fail(
                bucket,
                &format!("LARGE_PAYLOAD_BUCKET {bucket} is not reachable at start: {error}"),
            ),
        }
    }
    Ok((objects, s3_health))
}

/// The pipeline's settings, from the configuration and what the queue said of itself.
fn pipeline_settings(config: &RunConfig, limits: Limits, queue: &QueueInfo) -> PipelineSettings {
    if queue.visibility < MIN_VISIBILITY {
        tracing::warn!(queue_visibility = ?queue.visibility, used = ?MIN_VISIBILITY, "the queue's VisibilityTimeout is very short; received messages are hidden for longer");
    }
    PipelineSettings {
        write_limit: limits.writes as usize,
        adaptive: config.worker_adaptive_concurrency,
        caps: BatchCaps {
            rows: config.worker_batch_max_rows.get() as usize,
            bytes: config.worker_batch_max_bytes.get() as usize,
        },
        per_second: config.max_messages_per_second,
        visibility: queue.visibility.max(MIN_VISIBILITY),
        backoff: RetryBackoff {
            base: Duration::from_secs(config.retry_backoff_base_seconds),
            max: Duration::from_secs(
                config
                    .retry_backoff_max_seconds
                    .max(config.retry_backoff_base_seconds),
            ),
        },
        grace: config.ops.shutdown_grace(),
        max_fetched_bytes: limits.fetched_bytes,
        fuse_threshold: config.worker_refusal_fuse_threshold as usize,
    }
}

/// Logs the settings in force, once.
fn log_start(
    config: &RunConfig,
    limits: Limits,
    settings: &PipelineSettings,
    queue: &QueueInfo,
    identity: Option<fleet::Identity>,
) {
    tracing::info!(
        queue_url = %queue.url,
        dlq_url = queue.dlq_url.as_deref().unwrap_or("(none)"),
        visibility = ?settings.visibility,
        worker_concurrency = limits.writes,
        adaptive_concurrency = settings.adaptive,
        worker_max_in_flight = limits.window,
        batch_max_rows = settings.caps.rows,
        large_payload_bucket = config.large_payload_bucket.as_deref().unwrap_or("(none)"),
        max_fetched_bytes = settings.max_fetched_bytes.get(),
        database_max_connections = config.database.database_max_connections.get(),
        database_connection_budget = config.database_connection_budget,
        worker_id = identity.map(|i| i.worker_id.to_string()),
        "worker started"
    );
}
