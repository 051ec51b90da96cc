//! worker: long-polls SQS under a hard concurrency limit, stores each webhook in PostgreSQL
//! exactly once, and deletes a message only after its row is committed.
//!
//! [`run`] takes its ops listener and a shutdown token, so tests can start many instances;
//! [`run_with`] does the same with a custom [`Handler`](handler::Handler).

pub mod config;
pub mod consumer;
pub mod db;
pub mod db_errors;
pub mod gauges;
pub mod handler;
pub mod lag;
pub mod limit;
pub mod metrics;
pub mod process;
pub mod queue;
pub mod queue_info;
pub mod redrive;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use webhook_shared::metrics::PrometheusHandle;
use webhook_shared::ops::{self, Readiness};
use webhook_shared::sqs::{self, ClientTimeouts};

use crate::config::{DatabaseArgs, RunConfig};
use crate::consumer::Consumer;
use crate::handler::{Handler, StoreEvents};
use crate::lag::Lag;
use crate::limit::ConcurrencyLimit;
use crate::process::Processor;
use crate::queue::Queues;

/// Time allowed for one SQS call: the 20 s long poll plus a margin.
const SQS_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Consumes the queue with the default handler (store into `webhook_events`) until
/// `shutdown` is cancelled.
pub async fn run(
    config: RunConfig,
    ops_listener: TcpListener,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_with(config, StoreEvents, ops_listener, metrics, shutdown).await
}

/// Consumes the queue with `handler` until `shutdown` is cancelled, then stops receiving at
/// once and finishes the messages in processing within the grace period.
pub async fn run_with<H: Handler>(
    config: RunConfig,
    handler: H,
    ops_listener: TcpListener,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    metrics::describe();
    let pool = db::pool(&config.database)?;
    if config.run_migrations {
        db::migrate(&pool).await?;
    } else {
        db::ensure_migrated(&pool).await?;
    }
    let sqs = sqs::client(ClientTimeouts {
        attempt: SQS_ATTEMPT_TIMEOUT,
        max_attempts: 3,
    })
    .await;
    let info = queue_info::discover(&sqs, &config.queue_url, config.dlq_url.clone()).await;
    let limit = ConcurrencyLimit::new(config.worker_concurrency.get());
    let loops = config.receive_loops();
    tracing::info!(
        queue_url = %config.queue_url,
        dlq_url = info.dlq_url.as_deref().unwrap_or("(none)"),
        visibility = ?info.visibility,
        concurrency = limit.get(),
        receive_loops = loops,
        database_max_connections = config.database.database_max_connections.get(),
        "worker started"
    );

    let queues = Queues::new(sqs.clone(), config.queue_url.clone(), info.dlq_url.clone());
    let processor = Processor::new(
        queues.clone(),
        pool.clone(),
        handler,
        info.visibility,
        config.retry_backoff(),
    );
    let lag = Arc::new(Lag::default());
    let consumer = Arc::new(Consumer::new(
        sqs.clone(),
        config.queue_url.clone(),
        queues,
        limit,
        config.max_messages_per_second,
        processor,
        Arc::clone(&lag),
    ));
    let readiness = Readiness::default();
    readiness.set(true);
    let stop_ops = CancellationToken::new();
    let consume = async {
        consumer
            .run(loops, shutdown.clone(), config.ops.shutdown_grace())
            .await;
        readiness.set(false);
        tracing::info!("worker drained");
        stop_ops.cancel();
    };
    let gauges = gauges::run(
        sqs,
        config.queue_url.clone(),
        info.dlq_url,
        pool.clone(),
        lag,
        config.queue_metrics_interval(),
        shutdown.clone(),
    );
    tokio::join!(
        consume,
        gauges,
        ops::serve(ops_listener, metrics, readiness.clone(), stop_ops.clone())
    );
    pool.close().await;
    Ok(())
}

/// Applies the embedded migrations to the database and returns.
pub async fn migrate(args: &DatabaseArgs) -> anyhow::Result<()> {
    let pool = db::pool(args)?;
    db::migrate(&pool).await.context("migrating DATABASE_URL")?;
    let latest = db::MIGRATOR
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or_default();
    tracing::info!(latest, "database schema is up to date");
    pool.close().await;
    Ok(())
}
