//! ingest: accepts webhooks over HTTP, wraps each in an [`Envelope`](webhook_shared::envelope::Envelope)
//! and answers `202` only after SQS has accepted it.
//!
//! [`run`] takes its listeners and a shutdown token, so tests can start many instances on
//! port 0.
//!
//! The crate by wing, in the order a webhook meets them:
//! - `edge/`: the router, the webhook handler and its steps, the state handlers share, the
//!   headers the envelope keeps, and the status each refusal gets.
//! - `verify/`: where a signature is checked, one module per scheme; `sources/`: the sources
//!   file, each source's verifier and where its event ids come from.
//! - `body/`: where the body is read, within the memory budget and at the minimum data rate.
//! - `offload/`: a body above the threshold streamed to S3 in parts (`s3.rs` the S3 calls).
//! - `sqs/`: where a message goes to SQS: the `Publish` seam, the batcher that coalesces
//!   webhooks into `SendMessageBatch` calls, the limit on calls in flight, the call itself,
//!   and their spans when tracing is on.
//! - `config.rs` (the settings), `metrics.rs` (every metric), and this file (the start).
//!
//! Unit tests: small ones inline (`#[cfg(test)] mod tests {}`); those that would take a file
//! past about 400 lines in a sibling `x_tests.rs`, declared `#[cfg(test)] #[path =
//! "x_tests.rs"] mod tests;` (for a folder's `mod.rs`, `folder/folder_tests.rs`). Helpers
//! several test modules share live in a `testing.rs` of their folder.

mod body;
pub mod config;
mod edge;
mod metrics;
mod offload;
mod sources;
mod sqs;
mod verify;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use webhook_shared::metrics::PrometheusHandle;
use webhook_shared::ops::{self, Readiness};
use webhook_shared::server::{self, ServeOptions};
use webhook_shared::sqs::ClientTimeouts;
use webhook_shared::telemetry::Traces;

use crate::body::budget::body_budget;
use crate::config::Config;
use crate::edge::routes;
use crate::edge::state::AppState;
use crate::offload::{LargePayloads, PayloadStore as _, S3Store};
use crate::sources::Sources;
use crate::sqs::batcher::Batcher;
use crate::sqs::publisher::Publish;
use crate::sqs::send_batch::SqsBatchSender;
use crate::sqs::spans::Spans;

/// Connections accepted beyond `MAX_CONNECTIONS` for the load balancer's health checks
/// (`/healthz`, `/readyz`) alone, so a flood of clients cannot fail them.
const PROBE_SLOTS: usize = 8;
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

/// Loads the sources file (failing fast on any mistake in it), then runs ingest (with
/// spans to `traces` when tracing is on) until
/// `shutdown` is cancelled, then drains: `/readyz` turns 503 at once,
/// requests are still served for the deregistration delay, then the listener closes and
/// in-flight requests finish within the grace period.
pub async fn run(
    config: Config,
    listeners: Listeners,
    metrics: PrometheusHandle,
    traces: Traces,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let sources = load_sources(&config)?;
    metrics::describe();
    let max_body_bytes = config.max_body_bytes()?;
    let min_body_rate = config.min_body_rate()?;
    let large_payloads = match &config.large_payload_bucket {
        Some(bucket) => Some(large_payloads(&config, bucket).await?),
        None => None,
    };
    let queue_url = config.queue.url()?.to_owned();
    let spans = Spans::new(&traces, &queue_url);
    let (batcher, batching) = start_batcher(&config, queue_url.clone(), spans.clone()).await;
    let state = Arc::new(AppState {
        publisher: batcher,
        readiness: Readiness::default(),
        max_body_bytes,
        retry_after_seconds: config.retry_after_seconds,
        send_timeout: config.send_timeout(),
        body_budget: body_budget(config.max_in_flight_body_bytes),
        body_read_timeout: Duration::from_secs(config.body_read_timeout_seconds),
        min_body_rate,
        sources,
        fifo_group_header: config.fifo_group_header.clone(),
        large_payloads,
        spans,
    });
    log_start(&config, &listeners, &queue_url, max_body_bytes);
    serve(&config, listeners, metrics, &shutdown, state, batching).await;
    Ok(())
}

/// The sources file, when `SOURCES_FILE` is set (any mistake in it stops the start); else
/// every source accepted, unverified.
fn load_sources(config: &Config) -> anyhow::Result<Sources> {
    Ok(match &config.sources_file {
        Some(path) => {
            sources::load(path, &|name| std::env::var(name).ok()).context("loading SOURCES_FILE")?
        }
        None => Sources::open(),
    })
}

/// The batcher's dispatcher, and the token that closes it once the listener has drained.
struct Batching {
    close: CancellationToken,
    dispatcher: tokio::task::JoinHandle<()>,
}

/// Starts the batcher that coalesces webhooks into `SendMessageBatch` calls to `queue_url`.
async fn start_batcher(
    config: &Config,
    queue_url: String,
    spans: Option<Spans>,
) -> (Batcher<SqsBatchSender>, Batching) {
    // One attempt per call, never longer than a request may wait: the batcher retries per
    // entry, within each request's deadline.
    let client = webhook_shared::sqs::client(ClientTimeouts {
        attempt: config.send_timeout(),
        max_attempts: 1,
    })
    .await;
    let close = CancellationToken::new();
    let sender = SqsBatchSender::new(client, queue_url, config.fair_queue_groups, spans);
    let (batcher, dispatcher) = Batcher::start(sender, config.batch_options(), close.clone());
    (batcher, Batching { close, dispatcher })
}

/// Logs the start with what an operator checks first.
fn log_start(config: &Config, listeners: &Listeners, queue_url: &str, max_body_bytes: usize) {
    tracing::info!(
        listen_addr = %listeners.http.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()),
        %queue_url,
        max_body_bytes,
        large_payload_bucket = config.large_payload_bucket.as_deref(),
        "ingest started"
    );
}

/// How the webhook listener serves its connections.
fn serve_options(config: &Config) -> ServeOptions {
    ServeOptions {
        max_connections: config.max_connections,
        header_read_timeout: Duration::from_secs(config.header_read_timeout_seconds),
        idle_timeout: Duration::from_secs(config.idle_timeout_seconds),
        drain_timeout: config.ops.shutdown_grace(),
        http2: server::Http2Limits::for_header_bytes(crate::config::MAX_HEADER_BYTES),
        probe_slots: server::ProbeSlots {
            connections: PROBE_SLOTS,
            paths: &["/healthz", "/readyz"],
        },
    }
}

/// Serves webhooks and the ops port, ready from the start, until `shutdown`; then drains
/// (see [`run`]), closes the batcher once the listener is done, and stops the ops port last.
async fn serve<P: Publish>(
    config: &Config,
    listeners: Listeners,
    metrics: PrometheusHandle,
    shutdown: &CancellationToken,
    state: Arc<AppState<P>>,
    batching: Batching,
) {
    // Ready from here until draining: readiness follows this process only.
    state.readiness.set(true);
    let stop_accepting = CancellationToken::new();
    let stop_ops = CancellationToken::new();
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
        let options = serve_options(config);
        server::serve(listeners.http, service, stop_accepting.clone(), options).await;
        batching.close.cancel();
        if let Err(error) = batching.dispatcher.await {
            tracing::error!(%error, "batch dispatcher failed");
        }
        tracing::info!("ingest drained");
        stop_ops.cancel();
    };
    tokio::join!(
        http,
        drain,
        probe_queue(&state, shutdown),
        ops::serve(
            listeners.ops,
            metrics,
            state.readiness.clone(),
            stop_ops.clone()
        ),
    );
}

/// The S3 side of offloading, once the bucket has answered `HeadBucket` (within the S3
/// timeout): a bucket that is missing or unreachable stops the start, naming the setting.
async fn large_payloads(config: &Config, bucket: &str) -> anyhow::Result<LargePayloads> {
    let timeout = config.large_payload_s3_timeout();
    let client = webhook_shared::large_payload::s3_client(ClientTimeouts {
        attempt: timeout,
        max_attempts: 2,
    })
    .await;
    let store = S3Store::new(client, bucket.to_owned());
    let checked = tokio::time::timeout(timeout, store.check_bucket()).await;
    let problem = match checked {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(error.to_string()),
        Err(_) => Some(format!("no answer within {timeout:?}")),
    };
    if let Some(problem) = problem {
        anyhow::bail!("LARGE_PAYLOAD_BUCKET {bucket:?} cannot be reached (HeadBucket): {problem}");
    }
    Ok(LargePayloads::new(
        Arc::new(store),
        config.large_payload_threshold_bytes,
        config.large_payload_buffer_bytes,
        timeout,
    ))
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
