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
mod handler;
mod metrics;
mod pipeline;
mod s3;
mod sqs;
#[cfg(test)]
mod testing;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use webhook_shared::large_payload::{self, S3Timeouts};
use webhook_shared::metrics::PrometheusHandle;
use webhook_shared::ops::{self, Readiness};
use webhook_shared::sqs::{self as sdk_sqs, ClientTimeouts};

pub use crate::cli::main_with;
pub use crate::db::events::StoreEvents;
pub use crate::db::events::insert_events;
pub use crate::handler::{Handler, HandlerError, Stored};

use crate::config::{DatabaseArgs, RunConfig};
use crate::db::connections::Connections;
use crate::db::store::PgEventStore;
use crate::fleet::{Gate, Lease, LeaseSettings, LeasedPool};
use crate::pipeline::PipelineSettings;
use crate::pipeline::lag::Lag;
use crate::pipeline::s3_health::S3Health;
use crate::pipeline::window::Window;
use crate::pipeline::write::BatchCaps;
use crate::s3::{ObjectError, S3Objects};
use crate::sqs::Queue;
use crate::sqs::admin::SqsAdmin;
use crate::sqs::client::SqsQueue;

/// Time allowed for one SQS call: the 20 s long poll plus a margin.
const SQS_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for one S3 attempt, up to the response headers (the body is read under its
/// own timeout, see `s3/mod.rs`).
const S3_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed after the grace period for releasing what is held (5 s), leaving the lease
/// (2 s) and the rest; with the pool's close after it, the worker exits within
/// SHUTDOWN_GRACE_SECONDS + 12 s.
const EXIT_MARGIN: Duration = Duration::from_secs(10);
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
    let max_fetched_bytes = config.max_fetched_bytes()?;
    metrics::describe();
    let max_connections = config.database.database_max_connections.get();
    let budget = config.database_connection_budget;
    let identity = budget.map(|_| fleet::Identity::new());
    let deadline = config.database.transaction_timeout()?;
    // Migrations and checks on a connection of their own, without session timeouts; with a
    // budget it is the door (the worker has no share of the budget yet).
    let mut door = db::connect(&config.database).await?;
    let prepared = prepare_database(&mut door, config.run_migrations, &handler).await;
    let _ = sqlx::Connection::close(door).await;
    prepared?;
    let (connections, lease) = match (budget, identity) {
        (Some(budget), Some(identity)) => {
            let options = db::connect_options(&config.database)?;
            let pool = Arc::new(LeasedPool::new(
                options.clone(),
                // Behind a transaction pooler a session lock would pin the session.
                (config.database.database_statement_cache_capacity > 0)
                    .then_some(identity.session_key),
                config.database.acquire_timeout(),
                Arc::new(Gate::leased()),
            ));
            let settings = LeaseSettings {
                budget,
                wanted: (budget - 1).min(max_connections),
                period: config.lease(),
            };
            let lease = Lease::new(identity, settings, options, Arc::clone(&pool));
            (Connections::Leased(pool), Some(lease))
        }
        _ => {
            let pool = db::pool(&config.database)?;
            let gate = Arc::new(Gate::fixed(max_connections as usize));
            (Connections::Pool(pool, gate), None)
        }
    };
    let gate = Arc::clone(connections.gate());
    let sqs = sdk_sqs::client(ClientTimeouts {
        attempt: SQS_ATTEMPT_TIMEOUT,
        max_attempts: 3,
    })
    .await;
    let admin = SqsAdmin::new(sqs.clone());
    let objects = Arc::new(S3Objects::new(
        large_payload::s3_client(S3Timeouts {
            attempt: S3_ATTEMPT_TIMEOUT,
            max_attempts: 3,
        })
        .await,
    ));
    let s3_health = Arc::new(S3Health::new(window_size as usize / 2));
    if let Some(bucket) = &config.large_payload_bucket {
        match objects.check_bucket(bucket).await {
            Ok(()) => {}
            Err(ObjectError::Gone) => {
                anyhow::bail!("LARGE_PAYLOAD_BUCKET {bucket}: no such bucket");
            }
            // An outage, not a setting: start, small webhooks flow, pointers wait.
            Err(error) => s3_health.fail(
                bucket,
                &format!("LARGE_PAYLOAD_BUCKET {bucket} is not reachable at start: {error}"),
            ),
        }
    }
    let info =
        crate::sqs::queue_info::discover(&admin, &config.queue_url, config.dlq_url.clone()).await;
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
        max_fetched_bytes,
        fuse_threshold: config.worker_refusal_fuse_threshold as usize,
    };
    tracing::info!(
        queue_url = %config.queue_url,
        dlq_url = info.dlq_url.as_deref().unwrap_or("(none)"),
        visibility = ?settings.visibility,
        worker_concurrency = write_limit,
        adaptive_concurrency = settings.adaptive,
        worker_max_in_flight = window_size,
        batch_max_rows = settings.caps.rows,
        large_payload_bucket = config.large_payload_bucket.as_deref().unwrap_or("(none)"),
        max_fetched_bytes = max_fetched_bytes.get(),
        database_max_connections = max_connections,
        database_connection_budget = budget,
        worker_id = identity.map(|i| i.worker_id.to_string()),
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
    let stop_lease = CancellationToken::new();
    let consume = async {
        let store = PgEventStore::new(connections.clone(), handler, deadline);
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
    let gauges = metrics::gauges::run(
        admin,
        config.queue_url.clone(),
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

/// Applies the migrations (with `RUN_MIGRATIONS`) or checks that they are applied, then
/// runs the handler's. With a connection budget this happens on the door, a connection
/// outside the pool closed right after (the worker has no share of the budget yet).
async fn prepare_database<H: Handler>(
    conn: &mut sqlx::PgConnection,
    run_migrations: bool,
    handler: &H,
) -> anyhow::Result<()> {
    if run_migrations {
        db::migrate(conn).await?;
    } else {
        db::ensure_migrated(conn).await?;
    }
    db::migrate_handler(conn, handler).await
}

/// Applies the embedded migrations, then the handler's, and returns.
pub async fn migrate<H: Handler>(args: &DatabaseArgs, handler: &H) -> anyhow::Result<()> {
    let mut conn = db::connect(args).await?;
    db::migrate(&mut conn)
        .await
        .context("migrating DATABASE_URL")?;
    db::migrate_handler(&mut conn, handler).await?;
    let _ = sqlx::Connection::close(conn).await;
    let latest = db::MIGRATOR
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or_default();
    tracing::info!(latest, "database schema is up to date");
    Ok(())
}
