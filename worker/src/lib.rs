//! worker: long-polls SQS and stores each webhook in PostgreSQL exactly once, at the pace the
//! database can bear, deleting a message only after its row is committed.
//!
//! The consumer is a pipeline (see `pipeline.rs`): receives fill a window of held messages;
//! writers take what waits, group-commit style, at most `WORKER_CONCURRENCY` transactions at
//! once; committed messages are deleted in full batches; a heartbeat keeps held messages
//! hidden. [`run`] takes its ops listener and a shutdown token, so tests can start many
//! instances; [`run_with`] and [`main_with`] do the same with a custom [`Handler`].

mod adaptive;
mod batch;
mod circuit;
mod cli;
pub mod config;
mod db;
mod db_errors;
mod deleter;
mod gauges;
mod handler;
mod heartbeat;
mod lag;
mod metrics;
mod pipeline;
#[cfg(test)]
mod pipeline_tests;
mod planner;
mod queue;
mod queue_info;
mod receiver;
mod redrive;
mod sqs_client;
mod store;
#[cfg(test)]
mod testing;
mod window;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use webhook_shared::metrics::PrometheusHandle;
use webhook_shared::ops::{self, Readiness};
use webhook_shared::sqs::{self, ClientTimeouts};

pub use crate::cli::main_with;
pub use crate::handler::{Handler, HandlerError, StoreEvents, Stored};
pub use crate::store::insert_events;

use crate::config::{DatabaseArgs, RunConfig};
use crate::lag::Lag;
use crate::pipeline::PipelineSettings;
use crate::queue::Queue;
use crate::sqs_client::SqsQueue;
use crate::store::PgStore;
use crate::window::Window;
use crate::writer::BatchCaps;

/// Time allowed for one SQS call: the 20 s long poll plus a margin.
const SQS_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the pool to close at exit.
const POOL_CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Shortest time a received message stays hidden, whatever the queue's VisibilityTimeout
/// (SQS allows 0, which would hand every held message to other consumers at once).
const MIN_VISIBILITY: Duration = Duration::from_secs(5);

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
/// once and finishes the messages it holds within the grace period.
pub async fn run_with<H: Handler>(
    config: RunConfig,
    handler: H,
    ops_listener: TcpListener,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let write_limit = config.write_limit()?;
    let window_size = config.max_in_flight()?;
    metrics::describe();
    let pool = db::pool(&config.database)?;
    if config.run_migrations {
        db::migrate(&pool).await?;
    } else {
        db::ensure_migrated(&pool).await?;
    }
    db::migrate_handler(&pool, &handler).await?;
    let sqs = sqs::client(ClientTimeouts {
        attempt: SQS_ATTEMPT_TIMEOUT,
        max_attempts: 3,
    })
    .await;
    let info = queue_info::discover(&sqs, &config.queue_url, config.dlq_url.clone()).await;
    if info.visibility < MIN_VISIBILITY {
        tracing::warn!(queue_visibility = ?info.visibility, used = ?MIN_VISIBILITY, "the queue's VisibilityTimeout is very short; received messages are hidden for longer");
    }
    let settings = PipelineSettings {
        write_limit: write_limit as usize,
        adaptive: config.worker_adaptive_concurrency,
        caps: BatchCaps {
            rows: config.worker_batch_max_rows.get() as usize,
            bytes: config.worker_batch_max_bytes.get() as usize,
        },
        per_second: config.max_messages_per_second,
        visibility: info.visibility.max(MIN_VISIBILITY),
        backoff: config.retry_backoff(),
        grace: config.ops.shutdown_grace(),
    };
    tracing::info!(
        queue_url = %config.queue_url,
        dlq_url = info.dlq_url.as_deref().unwrap_or("(none)"),
        visibility = ?settings.visibility,
        worker_concurrency = write_limit,
        adaptive_concurrency = settings.adaptive,
        worker_max_in_flight = window_size,
        batch_max_rows = settings.caps.rows,
        database_max_connections = config.database.database_max_connections.get(),
        "worker started"
    );

    let queue = Arc::new(Queue::new(SqsQueue::new(
        sqs.clone(),
        config.queue_url.clone(),
        info.dlq_url.clone(),
    )));
    let window = Window::new(window_size as usize);
    let lag = Arc::new(Lag::new(Arc::clone(&window)));
    let readiness = Readiness::default();
    readiness.set(true);
    let stop_ops = CancellationToken::new();
    let consume = async {
        let store = PgStore::new(pool.clone(), handler);
        pipeline::run(
            queue,
            store,
            window,
            Arc::clone(&lag),
            settings,
            shutdown.clone(),
        )
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
        Arc::clone(&lag),
        config.queue_metrics_interval(),
        shutdown.clone(),
    );
    tokio::join!(
        consume,
        gauges,
        ops::serve(ops_listener, metrics, readiness.clone(), stop_ops.clone())
    );
    // Writes aborted at the end of the grace period may still hold connections; never wait
    // for them past a moment (PostgreSQL rolls back what the closed connections left).
    if tokio::time::timeout(POOL_CLOSE_TIMEOUT, pool.close())
        .await
        .is_err()
    {
        tracing::warn!("database connections still busy at exit; closing them unfinished");
    }
    Ok(())
}

/// Applies the embedded migrations, then the handler's, and returns.
pub async fn migrate<H: Handler>(args: &DatabaseArgs, handler: &H) -> anyhow::Result<()> {
    let pool = db::pool(args)?;
    db::migrate(&pool).await.context("migrating DATABASE_URL")?;
    db::migrate_handler(&pool, handler).await?;
    let latest = db::MIGRATOR
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or_default();
    tracing::info!(latest, "database schema is up to date");
    pool.close().await;
    Ok(())
}
