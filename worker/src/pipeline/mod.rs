//! The consumer as a pipeline: receiver → writer → deleter, with the window bounding the
//! messages held across all three and the heartbeat keeping them hidden. Each stage hands
//! on through a channel and stops when the stage before it has stopped and its own work is
//! done, so a shutdown drains from the front: receiving stops at once, what is held is
//! written and deleted. If the grace period runs out first, what is still in progress is
//! aborted and every message still held is released (made visible again) for another worker.

pub(crate) mod batch_context;
pub(crate) mod circuit;
pub(crate) mod dead_letters;
pub(crate) mod delete;
pub(crate) mod heartbeat;
pub(crate) mod lag;
pub(crate) mod pending;
pub(crate) mod quarantine;
pub(crate) mod receive;
pub(crate) mod receive_planner;
pub(crate) mod refusal_fuse;
pub(crate) mod resolve;
pub(crate) mod s3_health;
pub(crate) mod window;
pub(crate) mod write;
pub(crate) mod write_batch;
pub(crate) mod write_limit;
pub(crate) mod write_queue;
pub(crate) mod write_split;

#[cfg(test)]
#[path = "pipeline_fault_tests.rs"]
mod pipeline_fault_tests;
#[cfg(test)]
#[path = "pipeline_offload_tests.rs"]
mod pipeline_offload_tests;
#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod pipeline_tests;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::db::store::EventStore;
use crate::fleet::Gate;
use crate::metrics::{self, Outcome};
use crate::pipeline::batch_context::{BatchContext, RetryBackoff};
use crate::pipeline::circuit::Circuit;
use crate::pipeline::lag::Lag;
use crate::pipeline::quarantine::Quarantine;
use crate::pipeline::receive::{Receiver, rate_limiter, receive_size};
use crate::pipeline::refusal_fuse::RefusalFuse;
use crate::pipeline::resolve::fetch_budget;
use crate::pipeline::s3_health::S3Health;
use crate::pipeline::window::Window;
use crate::pipeline::write_queue::BatchCaps;
use crate::s3::PayloadObjects;
use crate::sqs::{Queue, QueueClient, Receipt};

/// Time allowed for releasing held messages once the grace period is over.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// The pipeline's settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PipelineSettings {
    /// Most batch writes (transactions) in progress at once: the ceiling of the adaptive limit.
    pub(crate) write_limit: usize,
    /// Whether the limit follows the database (else it stays at `write_limit`).
    pub(crate) adaptive: bool,
    /// Caps on one transaction.
    pub(crate) caps: BatchCaps,
    /// Optional rate limit on receiving.
    pub(crate) per_second: Option<NonZeroU32>,
    /// How long received messages stay hidden between heartbeats.
    pub(crate) visibility: Duration,
    /// Back-off after transient write failures.
    pub(crate) backoff: RetryBackoff,
    /// How long to drain after `shutdown` before aborting and releasing.
    pub(crate) grace: Duration,
    /// Most bytes of fetched S3 payloads held at once (see `pipeline/resolve.rs`).
    pub(crate) max_fetched_bytes: NonZeroU32,
    /// Distinct events refused alike at which the refusal fuse trips (0: off).
    pub(crate) fuse_threshold: usize,
}

/// Runs the pipeline until `shutdown`, then drains it within the grace period. Events are
/// written to `store`; offloaded ones are fetched from `objects` (and deleted there after
/// their commit) while `s3`'s breaker is closed.
pub(crate) async fn run<C: QueueClient, S: EventStore, O: PayloadObjects>(
    queue: Arc<Queue<C>>,
    (store, objects, s3): (S, Arc<O>, Arc<S3Health>),
    gate: Arc<Gate>,
    window: Arc<Window>,
    lag: Arc<Lag>,
    settings: PipelineSettings,
    shutdown: CancellationToken,
) {
    let circuit = Arc::new(Circuit::default());
    let (to_writer, writer_inbox) = mpsc::unbounded_channel();
    let (to_deleter, deleter_inbox) = mpsc::unbounded_channel();
    let receiver = Arc::new(Receiver {
        queue: Arc::clone(&queue),
        window: Arc::clone(&window),
        lag: Arc::clone(&lag),
        rate: settings.per_second.map(rate_limiter),
        size: receive_size(window.capacity(), settings.per_second),
        visibility: settings.visibility,
        to_writer,
        circuit: Arc::clone(&circuit),
        gate: Arc::clone(&gate),
    });
    let context = Arc::new(BatchContext {
        queue: Arc::clone(&queue),
        store,
        lag,
        backoff: settings.backoff,
        visibility: settings.visibility,
        circuit,
        gate,
        objects: Arc::clone(&objects),
        s3,
        budget: fetch_budget(settings.max_fetched_bytes),
        fuse: RefusalFuse::new(settings.fuse_threshold),
        quarantine: Quarantine::default(),
    });
    let stop_background = CancellationToken::new();
    let stages = async {
        tokio::join!(
            receiver.run(shutdown.clone()),
            write::run(
                writer_inbox,
                Arc::clone(&context),
                (settings.write_limit, settings.adaptive),
                settings.caps,
                to_deleter
            ),
            delete::run(deleter_inbox, Arc::clone(&queue), objects),
        );
        stop_background.cancel();
    };
    let all = async {
        tokio::join!(
            stages,
            heartbeat::run(
                Arc::clone(&window),
                Arc::clone(&queue),
                settings.visibility,
                stop_background.clone()
            ),
            circuit::probe_while_open(
                &context.circuit,
                || context.store.probe(),
                stop_background.clone()
            ),
            dead_letters::run(&context, stop_background.clone()),
            s3_health::probe_while_open(&context.s3, &*context.objects, stop_background.clone()),
        );
    };
    let grace_over = async {
        shutdown.cancelled().await;
        tokio::time::sleep(settings.grace).await;
    };
    let mut all = Box::pin(all);
    tokio::select! {
        () = &mut all => return,
        () = grace_over => {}
    }
    // Note what is held before the stages (and their messages) are dropped and their tasks
    // aborted, then release it.
    let receipts = window.all_receipts();
    drop(all);
    release_after_grace(&queue, receipts).await;
}

/// Makes `receipts` visible again at once, for another worker: the grace period is over and
/// what was still in progress has been aborted.
async fn release_after_grace<C: QueueClient>(queue: &Queue<C>, receipts: Vec<Receipt>) {
    tracing::warn!(
        held = receipts.len(),
        "grace period over; releasing the messages still held"
    );
    metrics::record_outcomes(Outcome::Released, receipts.len());
    let visible_now: Vec<(Receipt, Duration)> =
        receipts.into_iter().map(|r| (r, Duration::ZERO)).collect();
    if tokio::time::timeout(RELEASE_TIMEOUT, queue.change_visibility(&visible_now))
        .await
        .is_err()
    {
        tracing::warn!(
            "releasing timed out; SQS will deliver those messages after their visibility timeout"
        );
    }
}
