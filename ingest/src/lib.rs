//! ingest: accepts webhooks over HTTP, wraps each in an [`Envelope`](webhook_shared::envelope::Envelope)
//! and answers `202` only after SQS has accepted it.
//!
//! [`run`] takes its listeners and a shutdown token, so tests can start many instances on
//! port 0.

pub mod batcher;
pub mod body_budget;
pub mod call_limit;
pub mod config;
pub mod error;
pub mod headers;
pub mod metrics;
pub mod publisher;
pub mod routes;
pub mod sources;
pub mod sqs_batch;
pub mod verify;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use webhook_shared::metrics::PrometheusHandle;
use webhook_shared::ops::{self, Readiness};
use webhook_shared::server::{self, ServeOptions};
use webhook_shared::sqs::{self, ClientTimeouts};

use crate::batcher::Batcher;
use crate::body_budget::BodyBudget;
use crate::config::Config;
use crate::publisher::Publish;
use crate::routes::AppState;
use crate::sources::Sources;
use crate::sqs_batch::SqsBatchSender;

/// How often the queue is probed for `webhook_ingest_queue_reachable`.
const QUEUE_PROBE_INTERVAL: Duration = Duration::from_secs(10);

/// Listeners bound by the caller (port 0 in tests).
#[derive(Debug)]
pub struct Listeners {
    /// The webhook listener (`LISTEN_ADDR`).
    pub http: TcpListener,
    /// The ops listener (`METRICS_ADDR`).
    pub ops: TcpListener,
}

/// Loads the sources file (failing fast on any mistake in it), then runs ingest until
/// `shutdown` is cancelled, then drains: `/readyz` turns 503 at once,
/// requests are still served for the deregistration delay, then the listener closes and
/// in-flight requests finish within the grace period.
pub async fn run(
    config: Config,
    listeners: Listeners,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let sources = match &config.sources_file {
        Some(path) => {
            sources::load(path, &|name| std::env::var(name).ok()).context("loading SOURCES_FILE")?
        }
        None => Sources::open(),
    };
    metrics::describe();
    // One attempt per call, never longer than a request may wait: the batcher retries per
    // entry, within each request's deadline.
    let client = sqs::client(ClientTimeouts {
        attempt: config.send_timeout(),
        max_attempts: 1,
    })
    .await;
    let close_batcher = CancellationToken::new();
    let queue_url = config.queue_url()?.to_owned();
    let sender = SqsBatchSender::new(client, queue_url.clone());
    let (batcher, dispatcher) =
        Batcher::start(sender, config.batch_options(), close_batcher.clone());
    let state = Arc::new(AppState {
        publisher: batcher,
        readiness: Readiness::default(),
        max_body_bytes: config.max_body_bytes,
        retry_after_seconds: config.retry_after_seconds,
        send_timeout: config.send_timeout(),
        body_budget: BodyBudget::new(config.max_in_flight_body_bytes),
        body_read_timeout: Duration::from_secs(config.body_read_timeout_seconds),
        sources,
        fifo_group_header: config.fifo_group_header.clone(),
    });
    tracing::info!(
        listen_addr = %listeners.http.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()),
        %queue_url,
        max_body_bytes = config.max_body_bytes,
        "ingest started"
    );

    // Ready from here until draining: readiness follows this process only.
    state.readiness.set(true);
    let stop_accepting = CancellationToken::new();
    let stop_ops = CancellationToken::new();
    let options = ServeOptions {
        max_connections: config.max_connections,
        header_read_timeout: Duration::from_secs(config.header_read_timeout_seconds),
        idle_timeout: Duration::from_secs(config.idle_timeout_seconds),
        drain_timeout: config.ops.shutdown_grace(),
        http2: server::Http2Limits::for_header_bytes(crate::config::MAX_HEADER_BYTES),
    };
    let service = {
        let state = Arc::clone(&state);
        move |request| routes::route(Arc::clone(&state), request)
    };
    let drain = async {
        shutdown.cancelled().await;
        state.readiness.set(false);
        tracing::info!(delay = ?config.deregistration_delay(), "not ready; serving until deregistered");
        tokio::time::sleep(config.deregistration_delay()).await;
        stop_accepting.cancel();
    };
    let http = async {
        server::serve(listeners.http, service, stop_accepting.clone(), options).await;
        close_batcher.cancel();
        if let Err(error) = dispatcher.await {
            tracing::error!(%error, "batch dispatcher failed");
        }
        tracing::info!("ingest drained");
        stop_ops.cancel();
    };
    tokio::join!(
        http,
        drain,
        probe_queue(&state, &shutdown),
        ops::serve(
            listeners.ops,
            metrics,
            state.readiness.clone(),
            stop_ops.clone()
        ),
    );
    Ok(())
}

/// Keeps `webhook_ingest_queue_reachable` in step with whether the queue answers, until
/// shutdown. Readiness does not follow it (see [`ops::probe`]): a load balancer would replace
/// every task over an SQS hiccup, while each webhook already gets 503 and `Retry-After`.
async fn probe_queue<P: Publish>(state: &AppState<P>, shutdown: &CancellationToken) {
    let mut interval = tokio::time::interval(QUEUE_PROBE_INTERVAL);
    let mut reachable = None;
    while shutdown
        .run_until_cancelled(interval.tick())
        .await
        .is_some()
    {
        let Some(now) = shutdown.run_until_cancelled(state.publisher.probe()).await else {
            break;
        };
        if reachable != Some(now) {
            tracing::info!(reachable = now, "queue reachability changed");
            reachable = Some(now);
        }
    }
}
