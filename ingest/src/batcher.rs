//! Coalesced batching in the group-commit style.
//!
//! Requests hand their message to one dispatcher. The dispatcher waits for a free call slot
//! (at most `max_in_flight` batch calls at once), then takes the first waiting message and
//! everything else already waiting, up to 10 entries and 1 MiB, and starts the call. So a
//! lone request is sent at once, never waiting for a batch to fill; under load, batches form
//! by themselves while calls are in flight. An optional linger waits a little longer for
//! more messages.
//!
//! Each request gets its own entry's outcome. Entries that may pass later are retried with
//! backoff until the request's deadline; then the request gets an error (503 upstream).
//! Nothing is ever reported accepted that SQS did not accept.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use webhook_shared::sqs::{MAX_BATCH_ENTRIES, MAX_MESSAGE_BYTES};

use crate::metrics;
use crate::publisher::{
    EntryOutcome, OutgoingMessage, Publish, PublishError, SendBatch, payload_size,
};

/// First pause before retrying; doubles per attempt.
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Longest pause between retries.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// How batches are formed and sent.
#[derive(Debug, Clone, Copy)]
pub struct BatchOptions {
    /// Most messages per call (1 to 10); 1 sends one call per webhook.
    pub max_entries: usize,
    /// Extra time to wait for more messages once a call slot is free; zero sends at once.
    pub linger: Duration,
    /// Most batch calls in flight at once.
    pub max_in_flight: usize,
    /// Longest a request waits for the queue to accept its message, retries included.
    pub deadline: Duration,
}

/// A message waiting for its outcome.
struct Pending {
    message: OutgoingMessage,
    deadline: Instant,
    reply: oneshot::Sender<Result<(), PublishError>>,
}

impl Pending {
    fn answer(self, result: Result<(), PublishError>) {
        // The request may have gone (client disconnected); its outcome stands regardless.
        let _ = self.reply.send(result);
    }
}

/// The handle requests publish through. Cheap to share.
#[derive(Debug)]
pub struct Batcher<S> {
    queue: mpsc::Sender<Pending>,
    sender: Arc<S>,
    deadline: Duration,
}

impl<S: SendBatch> Batcher<S> {
    /// Starts the dispatcher. It runs until `close` is cancelled, then refuses new messages,
    /// sends every one already handed over, waits for the calls in flight, and ends.
    pub fn start(
        sender: S,
        options: BatchOptions,
        close: CancellationToken,
    ) -> (Self, JoinHandle<()>) {
        let sender = Arc::new(sender);
        let (queue, waiting) = mpsc::channel(options.max_in_flight * MAX_BATCH_ENTRIES * 4);
        let dispatcher = tokio::spawn(dispatch(waiting, Arc::clone(&sender), options, close));
        (
            Self {
                queue,
                sender,
                deadline: options.deadline,
            },
            dispatcher,
        )
    }
}

impl<S: SendBatch> Publish for Batcher<S> {
    async fn publish(&self, message: OutgoingMessage) -> Result<(), PublishError> {
        let deadline = Instant::now() + self.deadline;
        let (reply, outcome) = oneshot::channel();
        let pending = Pending {
            message,
            deadline,
            reply,
        };
        match tokio::time::timeout_at(deadline, self.queue.send(pending)).await {
            Ok(Ok(())) => outcome.await.unwrap_or(Err(PublishError)),
            Ok(Err(_closed)) => Err(PublishError),
            Err(_timeout) => {
                tracing::warn!("no batch slot within the deadline");
                Err(PublishError)
            }
        }
    }

    async fn probe(&self) -> bool {
        self.sender.probe().await
    }
}

async fn dispatch<S: SendBatch>(
    mut waiting: mpsc::Receiver<Pending>,
    sender: Arc<S>,
    options: BatchOptions,
    close: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(options.max_in_flight));
    let calls = TaskTracker::new();
    let mut carried: Option<Pending> = None;
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let first = match carried.take() {
            Some(pending) => pending,
            None => tokio::select! {
                biased;
                received = waiting.recv() => match received {
                    Some(pending) => pending,
                    None => break,
                },
                () = close.cancelled(), if !waiting.is_closed() => {
                    waiting.close();
                    continue;
                }
            },
        };
        let mut batch = Batch::new(first, options.max_entries);
        while batch.has_room() {
            match waiting.try_recv() {
                Ok(pending) => {
                    if let Err(pending) = batch.push(pending) {
                        carried = Some(pending);
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        if !options.linger.is_zero() && carried.is_none() {
            let until = Instant::now() + options.linger;
            while batch.has_room() {
                let Ok(Some(pending)) = tokio::time::timeout_at(until, waiting.recv()).await else {
                    break;
                };
                if let Err(pending) = batch.push(pending) {
                    carried = Some(pending);
                    break;
                }
            }
        }
        calls.spawn(send_with_retries(Arc::clone(&sender), batch.entries, slot));
    }
    calls.close();
    calls.wait().await;
}

/// Messages gathered for one call, within the entry and byte limits.
struct Batch {
    entries: Vec<Pending>,
    bytes: usize,
    max_entries: usize,
}

impl Batch {
    fn new(first: Pending, max_entries: usize) -> Self {
        let bytes = payload_size(&first.message);
        Self {
            entries: vec![first],
            bytes,
            max_entries: max_entries.clamp(1, MAX_BATCH_ENTRIES),
        }
    }

    fn has_room(&self) -> bool {
        self.entries.len() < self.max_entries
    }

    /// Adds a message, or gives it back if it would take the call past 1 MiB.
    fn push(&mut self, pending: Pending) -> Result<(), Pending> {
        let bytes = payload_size(&pending.message);
        if self.bytes + bytes > MAX_MESSAGE_BYTES {
            return Err(pending);
        }
        self.bytes += bytes;
        self.entries.push(pending);
        Ok(())
    }
}

/// Sends one batch, retrying what may pass until each entry's deadline, holding the call
/// slot throughout (so a struggling queue gets fewer concurrent calls, not more).
async fn send_with_retries<S: SendBatch>(
    sender: Arc<S>,
    mut entries: Vec<Pending>,
    _slot: OwnedSemaphorePermit,
) {
    let mut attempt = 0u32;
    loop {
        let now = Instant::now();
        let (live, expired): (Vec<_>, Vec<_>) = entries.into_iter().partition(|p| p.deadline > now);
        for pending in expired {
            metrics::record_send_failure("deadline");
            pending.answer(Err(PublishError));
        }
        entries = live;
        if entries.is_empty() {
            return;
        }
        let messages: Vec<&OutgoingMessage> = entries.iter().map(|p| &p.message).collect();
        let started = Instant::now();
        let result = sender.send_batch(&messages).await;
        metrics::record_batch(messages.len(), started.elapsed());
        let outcomes = match result {
            Ok(outcomes) if outcomes.len() == entries.len() => outcomes,
            Ok(outcomes) => {
                tracing::error!(
                    sent = entries.len(),
                    answered = outcomes.len(),
                    "batch answer does not match the batch; retrying all"
                );
                vec![EntryOutcome::Retry; entries.len()]
            }
            Err(call_outcome) => vec![call_outcome; entries.len()],
        };
        let mut retry = Vec::new();
        for (pending, outcome) in entries.into_iter().zip(outcomes) {
            match outcome {
                EntryOutcome::Accepted => pending.answer(Ok(())),
                EntryOutcome::Reject => {
                    metrics::record_send_failure("rejected");
                    pending.answer(Err(PublishError));
                }
                EntryOutcome::Retry => retry.push(pending),
            }
        }
        if retry.is_empty() {
            return;
        }
        attempt += 1;
        metrics::record_retries(retry.len());
        let pause = (FIRST_RETRY_PAUSE * 2u32.saturating_pow(attempt - 1)).min(MAX_RETRY_PAUSE);
        let earliest_deadline = retry.iter().map(|p| p.deadline).min().unwrap_or(now);
        tokio::time::sleep_until((Instant::now() + pause).min(earliest_deadline)).await;
        entries = retry;
    }
}

#[cfg(test)]
#[path = "batcher_tests.rs"]
mod tests;
