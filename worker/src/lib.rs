//! worker: long-polls SQS and stores each webhook in PostgreSQL exactly once, at the pace the
//! database can bear, deleting a message only after its row is committed.
//!
//! The consumer is a pipeline (see `pipeline/mod.rs`): receives fill a window of held messages;
//! writers take what waits, group-commit style, at most `WORKER_CONCURRENCY` transactions at
//! once; committed messages are deleted in full batches; a heartbeat keeps held messages
//! hidden. Webhooks offloaded to S3 by ingest (or by AWS's extended client libraries) are
//! fetched just before their transaction (see `pipeline/resolve.rs`). With `DATABASE_CONNECTION_BUDGET`, the workers on one database share that many
//! connections through a lease table (see `fleet/mod.rs`). [`run`] takes its ops listener and a
//! shutdown token, so tests can start many instances; [`run_with`] and [`main_with`] do the
//! same with a custom [`Handler`].

mod cli;
pub mod config;
mod db;
mod fleet;
mod gauges;
mod maintain;
mod metrics;
mod migrate_partitions;
mod partitions;
mod pipeline;
mod replay;
mod s3;
mod sqs;
mod start;
#[cfg(test)]
mod testing;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use webhook_shared::metrics::PrometheusHandle;
use webhook_shared::ops::{self, Readiness};

pub use crate::cli::main_with;
pub use crate::db::events::StoreEvents;
pub use crate::db::events::{INSERT_EVENTS_SQL, INSERT_NEW_EVENTS_SQL, insert_events};
pub use crate::db::handler::{Handler, HandlerError, Stored};

use crate::config::{MigrateArgs, RunConfig};
use crate::db::partition_keeper::Keeper;
use crate::db::store::PgEventStore;
use crate::pipeline::lag::Lag;
use crate::pipeline::window::Window;
use crate::sqs::Queue;
use crate::sqs::client::SqsQueue;
use crate::sqs::spans::Spans;
use crate::start::Started;
use webhook_shared::telemetry::Traces;

/// Time allowed after the grace period for releasing what is held (5 s), leaving the lease
/// (2 s) and the rest; with the pool's close after it, the worker exits within
/// SHUTDOWN_GRACE_SECONDS + 12 s.
const EXIT_MARGIN: Duration = Duration::from_secs(10);
/// Longest wait for the pool to close at exit.
const POOL_CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Consumes the queue with the default handler (store into `webhook_events`) until
/// `shutdown` is cancelled.
pub async fn run(
    config: RunConfig,
    ops_listener: TcpListener,
    metrics: PrometheusHandle,
    traces: Traces,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_with(config, StoreEvents, ops_listener, metrics, traces, shutdown).await
}

/// Consumes the queue with `handler` until `shutdown` is cancelled, then stops receiving at
/// once and finishes the messages it holds within the grace period.
pub async fn run_with<H: Handler>(
    config: RunConfig,
    handler: H,
    ops_listener: TcpListener,
    metrics: PrometheusHandle,
    traces: Traces,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    metrics::describe();
    let source_labels = config.source_labels()?;
    let Started {
        limits,
        connections,
        lease,
        sqs,
        admin,
        objects,
        s3_health,
        queue: info,
        settings,
    } = start::start(&config, &handler).await?;
    let gate = Arc::clone(connections.gate());
    let queue = Arc::new(
        Queue::new(SqsQueue::new(
            sqs.clone(),
            info.url.clone(),
            info.dlq_url.clone(),
        ))
        .with_spans(Spans::new(&traces, &info.url)),
    );
    let window = Window::new(limits.window as usize);
    let lag = Arc::new(Lag::new(Arc::clone(&window), source_labels));
    let readiness = Readiness::default();
    readiness.set(true);
    let stop_ops = CancellationToken::new();
    let stop_lease = CancellationToken::new();
    let keeper = Keeper::new(config.partitions.settings(), connections.clone());
    let consume = async {
        let store = PgEventStore::new(connections.clone(), handler, limits.transaction)
            .with_partitions(keeper.clone());
        pipeline::run(
            queue,
            (store, objects, s3_health),
            Arc::clone(&gate),
            window,
            Arc::clone(&lag),
            settings,
            shutdown.clone(),
        )
        .await;
        readiness.set(false);
        tracing::info!("worker drained");
        stop_lease.cancel();
        stop_ops.cancel();
    };
    // Boxed: the lease's state machine would make this future too large to move around.
    let lease = Box::pin(async {
        if let Some(lease) = lease {
            lease.run(stop_lease.clone()).await;
        }
    });
    let gauges = gauges::run(
        admin,
        info.url.clone(),
        info.dlq_url,
        connections.clone(),
        Arc::clone(&lag),
        config.queue_metrics_interval(),
        shutdown.clone(),
    );
    let everything = async {
        tokio::join!(
            consume,
            lease,
            gauges,
            keeper.clone().run(shutdown.clone()),
            ops::serve(ops_listener, metrics, readiness.clone(), stop_ops.clone())
        );
    };
    // However unreachable the database and SQS are, the worker is gone within the grace
    // period plus [`EXIT_MARGIN`], before ECS's stopTimeout sends SIGKILL.
    let exit_deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(config.ops.shutdown_grace() + EXIT_MARGIN).await;
    };
    tokio::select! {
        () = Box::pin(everything) => {}
        () = exit_deadline => tracing::error!(margin = ?EXIT_MARGIN, "the shutdown did not finish within the grace period and its margin; exiting anyway (SQS delivers what is still held again)"),
    }
    // Writes aborted at the end of the grace period may still hold connections; never wait
    // for them past a moment (PostgreSQL rolls back what the closed connections left).
    if !connections.close(POOL_CLOSE_TIMEOUT).await {
        tracing::warn!("database connections still busy at exit; closing them unfinished");
    }
    Ok(())
}

/// Applies the embedded migrations, then the handler's, makes the partitions ahead, and
/// returns.
pub async fn migrate<H: Handler>(args: &MigrateArgs, handler: &H) -> anyhow::Result<()> {
    let mut conn = db::connect(&args.database).await?;
    db::migrate(&mut conn)
        .await
        .context("migrating DATABASE_URL")?;
    db::migrate_handler(&mut conn, handler).await?;
    partitions::prepare(&mut conn, args.partitions.settings()).await?;
    let _ = sqlx::Connection::close(conn).await;
    let latest = db::MIGRATOR
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or_default();
    tracing::info!(latest, "database schema is up to date");
    Ok(())
}
