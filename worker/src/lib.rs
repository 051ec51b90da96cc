//! worker: long-polls SQS under a hard concurrency limit, stores each webhook in PostgreSQL
//! exactly once, and deletes a message only after its row is committed.
//!
//! [`run`] takes its ops listener and a shutdown token, so tests can start many instances.

pub mod config;
pub mod consumer;
pub mod db;
pub mod metrics;
pub mod queue_depth;
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

/// Time allowed for one SQS call: the 20 s long poll plus a margin.
const SQS_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Consumes the queue until `shutdown` is cancelled, then stops receiving at once and
/// finishes the messages in processing within the grace period.
pub async fn run(
    config: RunConfig,
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
    let concurrency = config.worker_concurrency.get();
    let loops = config.receive_loops();
    tracing::info!(
        queue_url = %config.queue_url,
        concurrency,
        receive_loops = loops,
        database_max_connections = config.database.database_max_connections.get(),
        "worker started"
    );

    let readiness = Readiness::default();
    readiness.set(true);
    let stop_ops = CancellationToken::new();
    let consumer = Arc::new(Consumer::new(
        sqs.clone(),
        config.queue_url.clone(),
        pool.clone(),
        concurrency,
    ));
    let consume = async {
        consumer
            .run(loops, shutdown.clone(), config.ops.shutdown_grace())
            .await;
        readiness.set(false);
        tracing::info!("worker drained");
        stop_ops.cancel();
    };
    tokio::join!(
        consume,
        queue_depth::run(
            sqs,
            config.queue_url.clone(),
            config.dlq_url.clone(),
            config.queue_metrics_interval(),
            shutdown.clone()
        ),
        ops::serve(ops_listener, metrics, readiness.clone(), stop_ops.clone()),
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
