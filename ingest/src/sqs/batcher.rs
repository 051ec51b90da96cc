//! Coalesced batching in the group-commit style.
//!
//! Requests hand their message to one dispatcher. The dispatcher takes the first waiting
//! message and everything else already waiting, up to 10 entries and 1 MiB, waits for a call
//! slot it may use (gathering what arrives meanwhile), and starts the call. So a lone request
//! is sent at once, never waiting for a batch to fill; under load, batches form by themselves
//! while calls are in flight. When calls queue at the server, a partial batch waits for the
//! calls in flight rather than queue behind them (see [`gather`]). An optional linger waits a
//! little longer for more messages, but only while another call is in flight: on an idle
//! pipe a webhook goes at once.
//!
//! How many calls may be in flight is the [`CallLimit`]'s: adaptive (from the call latency it
//! observes, between 1 and `max_in_flight`) or fixed at `max_in_flight`. Fewer calls in flight
//! mean fuller batches; the limit allows more only while calls do not queue at the server.
//!
//! Each request gets its own entry's outcome. Entries that may pass later are retried with
//! backoff until the request's deadline; then the request gets an error (503 upstream).
//! Nothing is ever reported accepted that SQS did not accept.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use webhook_shared::sqs::{MAX_BATCH_ENTRIES, MAX_MESSAGE_BYTES};

use crate::metrics;
use crate::sqs::call_limit::{CallLimit, CallSample, Change};
use crate::sqs::publisher::{
    EntryOutcome, OutgoingMessage, Publish, PublishError, SendBatch, payload_size,
};

/// First pause before retrying; doubles per attempt.
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Longest pause between retries.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// How batches are formed and sent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchOptions {
    /// Most messages per call (1 to 10); 1 sends one call per webhook.
    pub max_entries: usize,
    /// Extra time to wait for more messages once a call slot is free, while another call is
    /// in flight; zero sends at once.
    pub linger: Duration,
    /// Most batch calls in flight at once: the ceiling of the adaptive limit, or the limit.
    pub max_in_flight: usize,
    /// Whether the calls in flight follow the observed call latency (between 1 and
    /// `max_in_flight`) rather than stay at `max_in_flight`.
    pub adaptive_in_flight: bool,
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
pub(crate) struct Batcher<S> {
    queue: mpsc::Sender<Pending>,
    sender: Arc<S>,
    deadline: Duration,
}

impl<S: SendBatch> Batcher<S> {
    /// Starts the dispatcher. It runs until `close` is cancelled, then refuses new messages,
    /// sends every one already handed over, waits for the calls in flight, and ends.
    pub(crate) fn start(
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

/// The calls in flight and their limit, shared by the dispatcher and the calls.
#[derive(Debug)]
struct Calls {
    limit: Mutex<CallLimit>,
    /// Calls holding a slot: on the wire, or pausing before a retry.
    busy: AtomicUsize,
    /// `SendMessageBatch` calls on the wire.
    on_wire: AtomicUsize,
    /// Wakes the dispatcher when a slot frees or the limit grows.
    changed: Notify,
}

impl Calls {
    fn limit(&self) -> MutexGuard<'_, CallLimit> {
        // The controller holds no invariant a panic elsewhere could break half-way.
        self.limit.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies a change of the limit: the gauge, and a wake-up when it grew.
    fn apply(&self, change: Option<Change>) {
        let Some(change) = change else { return };
        metrics::gauge_batch_calls_limit(change.to);
        tracing::debug!(from = change.from, to = change.to, reason = ?change.reason, "batch call limit changed");
        if change.to > change.from {
            self.changed.notify_one();
        }
    }
}

/// A call slot, freed when the call (retries included) is over.
#[derive(Debug)]
struct Slot(Arc<Calls>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
        self.0.changed.notify_one();
    }
}

async fn dispatch<S: SendBatch>(
    mut waiting: mpsc::Receiver<Pending>,
    sender: Arc<S>,
    options: BatchOptions,
    close: CancellationToken,
) {
    let calls = Arc::new(Calls {
        limit: Mutex::new(CallLimit::new(
            options.max_in_flight,
            options.adaptive_in_flight,
            Instant::now(),
        )),
        busy: AtomicUsize::new(0),
        on_wire: AtomicUsize::new(0),
        changed: Notify::new(),
    });
    metrics::gauge_batch_calls_limit(calls.limit().limit());
    let tracker = TaskTracker::new();
    let mut carried: Option<Pending> = None;
    loop {
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
        let slot = gather(&mut batch, &mut waiting, &mut carried, &calls).await;
        // Nagle's rule: linger only while another call is in flight (this one's slot is
        // counted), so a webhook on an idle pipe goes at once whatever the linger.
        let busy = calls.busy.load(Ordering::Relaxed) > 1;
        if !options.linger.is_zero() && carried.is_none() && busy {
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
        tracker.spawn(send_with_retries(Arc::clone(&sender), batch.entries, slot));
    }
    tracker.close();
    tracker.wait().await;
}

/// Fills `batch` with what is waiting until a call slot may take it, and takes the slot. A
/// full batch may take any free slot; a partial one too, unless calls queue at the server
/// ([`CallLimit::saturated`]): then only when no call is in flight (so a lone webhook still
/// goes at once). A partial call sent to such a server would only wait behind the calls in
/// flight, and cost it a whole call for a few webhooks; waiting for one of them to come back
/// instead gathers the webhooks arriving meanwhile into a fuller call.
async fn gather(
    batch: &mut Batch,
    waiting: &mut mpsc::Receiver<Pending>,
    carried: &mut Option<Pending>,
    calls: &Arc<Calls>,
) -> Slot {
    let mut waited = false;
    let mut open = true;
    loop {
        while carried.is_none() && batch.has_room() {
            let Ok(pending) = waiting.try_recv() else {
                break;
            };
            if let Err(pending) = batch.push(pending) {
                *carried = Some(pending);
            }
        }
        let full = carried.is_some() || !batch.has_room();
        let (limit, saturated) = {
            let limit = calls.limit();
            (limit.limit(), limit.saturated())
        };
        let busy = calls.busy.load(Ordering::Relaxed);
        if busy < limit && (full || busy == 0 || !saturated) {
            calls.busy.fetch_add(1, Ordering::Relaxed);
            return Slot(Arc::clone(calls));
        }
        // Only a wait for a slot says the limit held webhooks back; a partial batch waiting
        // for the calls in flight says the opposite.
        if !waited && busy >= limit {
            calls.limit().on_backlog();
            waited = true;
        }
        tokio::select! {
            () = calls.changed.notified() => {}
            received = waiting.recv(), if open && !full => match received {
                Some(pending) => {
                    if let Err(pending) = batch.push(pending) {
                        *carried = Some(pending);
                    }
                }
                None => open = false,
            },
        }
    }
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
    #[allow(
        clippy::result_large_err,
        reason = "the message is handed back to the caller to send next, not propagated"
    )]
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
/// slot throughout (so a struggling queue gets fewer concurrent calls, not more). Each
/// attempt's latency, or its failure, goes to the call limit.
async fn send_with_retries<S: SendBatch>(sender: Arc<S>, mut entries: Vec<Pending>, slot: Slot) {
    let calls = &slot.0;
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
        let in_flight = calls.on_wire.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge_batch_calls_in_flight(in_flight);
        let started = Instant::now();
        let result = sender.send_batch(&messages).await;
        let latency = started.elapsed();
        let on_wire = calls.on_wire.fetch_sub(1, Ordering::Relaxed) - 1;
        metrics::gauge_batch_calls_in_flight(on_wire);
        metrics::record_batch(messages.len(), latency);
        let sample = CallSample {
            entries: messages.len(),
            latency,
            in_flight,
        };
        let change = match &result {
            Ok(_) => calls.limit().on_call(sample, Instant::now()),
            Err(EntryOutcome::Retry) => calls.limit().on_failure(Instant::now()),
            Err(_) => None,
        };
        calls.apply(change);
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
