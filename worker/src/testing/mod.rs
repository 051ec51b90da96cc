//! Fakes for unit tests: [`FakeQueue`] behind the SQS seam and [`FakeEventStore`] behind the
//! database seam, both recording what they were asked, so the pipeline's rules run in
//! milliseconds. End-to-end tests use the real services.

pub(crate) mod admin;
pub(crate) mod objects;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use webhook_shared::envelope::Envelope;

use aws_sdk_sqs::types::MessageAttributeValue;

use crate::db::store::{EventStore, Written};
use crate::db::write_error::WriteError;
use crate::handler::Stored;
use crate::pipeline::pending::Pending;
use crate::pipeline::window::Window;
use crate::sqs::payload::{EventKey, Payload};
use crate::sqs::{FailedEntry, InboundMessage, QueueClient, QueueError, Receipt};

/// Long-poll wait of the fake.
const WAIT: Duration = Duration::from_secs(20);

/// An in-memory queue. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub(crate) struct FakeQueue {
    state: Arc<Mutex<QueueState>>,
    arrived: Arc<Notify>,
}

/// What the fake holds and what it was asked.
#[derive(Debug, Default)]
pub(crate) struct QueueState {
    next_id: u64,
    /// Messages visible now.
    pub(crate) visible: VecDeque<InboundMessage>,
    /// Ids deleted, in order.
    pub(crate) deleted: Vec<String>,
    /// Entries per DeleteMessageBatch call.
    pub(crate) delete_calls: Vec<usize>,
    /// (id, visibility) per changed entry, in order.
    pub(crate) visibility_changes: Vec<(String, Duration)>,
    /// (body, reason) sent to the DLQ.
    pub(crate) dlq: Vec<(String, String)>,
    /// Entries per ReceiveMessage call asked for.
    pub(crate) receive_sizes: Vec<usize>,
    /// Messages given out and neither deleted nor released, at most, at any time.
    pub(crate) max_outstanding: usize,
    outstanding: usize,
    fail_deletes: HashMap<String, u32>,
    /// ChangeMessageVisibilityBatch calls still to fail whole (an SQS outage).
    pub(crate) fail_visibility_calls: u32,
    /// Every message given out and not deleted, by id.
    given: HashMap<String, InboundMessage>,
}

impl FakeQueue {
    /// Locks the state.
    pub(crate) fn state(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new message with `body`, not enqueued.
    pub(crate) fn message(&self, body: &str) -> InboundMessage {
        let mut state = self.state();
        state.next_id += 1;
        let id = format!("m{}", state.next_id);
        InboundMessage {
            receipt: Receipt {
                handle: format!("handle-{id}"),
                message_id: id,
            },
            body: body.to_owned(),
            sent_ms: Some(crate::pipeline::lag::now_ms()),
            receive_count: 1,
            attributes: HashMap::new(),
        }
    }

    /// Enqueues messages with these bodies; returns their ids.
    pub(crate) fn push(&self, bodies: impl IntoIterator<Item = String>) -> Vec<String> {
        let messages = bodies.into_iter().map(|b| self.message(&b)).collect();
        self.push_messages(messages)
    }

    /// Enqueues messages as they are (attributes included); returns their ids.
    pub(crate) fn push_messages(&self, messages: Vec<InboundMessage>) -> Vec<String> {
        let ids = messages
            .iter()
            .map(|m| m.receipt.message_id.clone())
            .collect();
        self.state().visible.extend(messages);
        self.arrived.notify_waiters();
        ids
    }

    /// Makes every message given out and not deleted visible again, one receive later, as
    /// SQS does once their visibility runs out (call it only while the worker holds none).
    pub(crate) fn make_all_visible(&self) {
        let mut state = self.state();
        let mut given: Vec<InboundMessage> = state.given.drain().map(|(_, m)| m).collect();
        given.sort_by(|a, b| a.receipt.message_id.cmp(&b.receipt.message_id));
        for mut message in given {
            message.receive_count += 1;
            state.outstanding = state.outstanding.saturating_sub(1);
            state.visible.push_back(message);
        }
        drop(state);
        self.arrived.notify_waiters();
    }

    /// Enqueues `count` valid envelopes; returns their message ids.
    pub(crate) fn push_envelopes(&self, count: usize) -> Vec<String> {
        self.push((0..count).map(|n| envelope(&format!("e{n}")).to_json()))
    }

    /// Makes the next `times` deletes of `message_id` fail (retryable).
    pub(crate) fn fail_deletes_of(&self, message_id: &str, times: u32) {
        self.state()
            .fail_deletes
            .insert(message_id.to_owned(), times);
    }

    /// Ids deleted so far.
    pub(crate) fn deleted(&self) -> Vec<String> {
        self.state().deleted.clone()
    }

    /// Entries per delete call so far.
    pub(crate) fn delete_calls(&self) -> Vec<usize> {
        self.state().delete_calls.clone()
    }

    /// (body, reason) sent to the DLQ so far.
    pub(crate) fn dlq(&self) -> Vec<(String, String)> {
        self.state().dlq.clone()
    }
}

impl QueueClient for FakeQueue {
    async fn receive(
        &self,
        max: usize,
        _visibility: Duration,
    ) -> Result<Vec<InboundMessage>, QueueError> {
        self.state().receive_sizes.push(max);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let arrived = self.arrived.notified();
            {
                let mut state = self.state();
                if !state.visible.is_empty() {
                    let take = state.visible.len().min(max);
                    let batch: Vec<InboundMessage> = state.visible.drain(..take).collect();
                    for message in &batch {
                        state
                            .given
                            .insert(message.receipt.message_id.clone(), message.clone());
                    }
                    state.outstanding += batch.len();
                    state.max_outstanding = state.max_outstanding.max(state.outstanding);
                    return Ok(batch);
                }
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn delete_batch(&self, receipts: &[Receipt]) -> Result<Vec<FailedEntry>, QueueError> {
        let mut state = self.state();
        state.delete_calls.push(receipts.len());
        let mut failed = Vec::new();
        for (index, receipt) in receipts.iter().enumerate() {
            if let Some(times) = state.fail_deletes.get_mut(&receipt.message_id)
                && *times > 0
            {
                *times -= 1;
                failed.push(FailedEntry {
                    index,
                    code: "InternalError".into(),
                    sender_fault: false,
                });
                continue;
            }
            state.deleted.push(receipt.message_id.clone());
            state.given.remove(&receipt.message_id);
            state.outstanding = state.outstanding.saturating_sub(1);
        }
        Ok(failed)
    }

    async fn change_visibility_batch(
        &self,
        entries: &[(Receipt, Duration)],
    ) -> Result<Vec<FailedEntry>, QueueError> {
        let mut state = self.state();
        if state.fail_visibility_calls > 0 {
            state.fail_visibility_calls -= 1;
            return Err(QueueError {
                operation: "ChangeMessageVisibilityBatch",
                message: "service unavailable".into(),
            });
        }
        for (receipt, visibility) in entries {
            state
                .visibility_changes
                .push((receipt.message_id.clone(), *visibility));
            if !visibility.is_zero() {
                continue;
            }
            // Released: visible again, as SQS would make it.
            state.outstanding = state.outstanding.saturating_sub(1);
            let message = InboundMessage {
                receipt: receipt.clone(),
                body: String::new(),
                sent_ms: None,
                receive_count: 2,
                attributes: HashMap::new(),
            };
            state.visible.push_back(message);
        }
        Ok(Vec::new())
    }

    async fn send_to_dlq(&self, message: &InboundMessage, reason: &str) -> Result<(), QueueError> {
        self.state()
            .dlq
            .push((message.body.clone(), reason.to_owned()));
        Ok(())
    }

    fn has_dlq(&self) -> bool {
        true
    }
}

/// A valid envelope with event id `id`.
pub(crate) fn envelope(id: &str) -> Envelope {
    Envelope {
        id: id.to_owned(),
        source: "test".to_owned(),
        received_at: chrono::Utc::now(),
        headers: BTreeMap::new(),
        content_type: Some("application/json".to_owned()),
        body: bytes::Bytes::from(format!(r#"{{"id":"{id}"}}"#)),
    }
}

/// A message attribute.
pub(crate) fn attribute(data_type: &str, value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type(data_type)
        .string_value(value)
        .build()
        .expect("data_type is set")
}

/// Pending messages of the given body sizes, held in a fresh window.
pub(crate) async fn held_messages(
    fake: &FakeQueue,
    sizes: &[usize],
) -> (Arc<Window>, Vec<Pending>) {
    let window = Window::new(sizes.len().max(1));
    let messages: Vec<InboundMessage> = sizes
        .iter()
        .map(|&size| fake.message(&"x".repeat(size)))
        .collect();
    let held = window.reserve(sizes.len()).await.admit(
        messages.iter().map(|m| (m.receipt.clone(), m.sent_ms)),
        Duration::from_secs(30),
    );
    let pending = messages
        .into_iter()
        .zip(held)
        .enumerate()
        .map(|(n, (m, h))| Pending::new(Payload::Inline(envelope(&n.to_string())), m, h))
        .collect();
    (window, pending)
}

/// How the fake store answers a batch.
pub(crate) type Behaviour =
    Box<dyn Fn(&[Envelope]) -> Result<Vec<Stored>, WriteError> + Send + Sync>;

/// An in-memory store.
pub(crate) struct FakeEventStore {
    /// What it recorded.
    pub(crate) state: Arc<Mutex<EventStoreState>>,
    behaviour: Behaviour,
    delay: Duration,
    /// When set, each write waits for a permit (never given back) before answering.
    pub(crate) gate: Option<Arc<Semaphore>>,
    /// While set, probes fail as if the database were unreachable.
    pub(crate) down: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for FakeEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeEventStore").finish_non_exhaustive()
    }
}

/// What the fake store saw.
#[derive(Debug, Default)]
pub(crate) struct EventStoreState {
    /// Event ids committed (new or duplicate), in order.
    pub(crate) committed: Vec<String>,
    /// Events per write attempt.
    pub(crate) batches: Vec<usize>,
    /// Writes in progress now, and at most.
    pub(crate) in_progress: usize,
    /// Most writes in progress at once.
    pub(crate) max_in_progress: usize,
    /// Probes made.
    pub(crate) probes: usize,
}

impl FakeEventStore {
    /// A store that answers with `behaviour` after `delay`.
    pub(crate) fn new(delay: Duration, behaviour: Behaviour) -> Self {
        Self {
            state: Arc::default(),
            behaviour,
            delay,
            gate: None,
            down: Arc::default(),
        }
    }

    /// A store that stores everything as new after `delay`.
    pub(crate) fn accepting(delay: Duration) -> Self {
        Self::new(
            delay,
            Box::new(|events| Ok(vec![Stored::New; events.len()])),
        )
    }

    /// Locks the state.
    pub(crate) fn lock(state: &Arc<Mutex<EventStoreState>>) -> MutexGuard<'_, EventStoreState> {
        state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl EventStore for FakeEventStore {
    async fn write(&self, events: &[Envelope]) -> Result<Written, WriteError> {
        {
            let mut state = Self::lock(&self.state);
            state.batches.push(events.len());
            state.in_progress += 1;
            state.max_in_progress = state.max_in_progress.max(state.in_progress);
        }
        tokio::time::sleep(self.delay).await;
        if let Some(gate) = &self.gate {
            gate.acquire().await.map(|p| p.forget()).ok();
        }
        let result = (self.behaviour)(events);
        let mut state = Self::lock(&self.state);
        state.in_progress -= 1;
        if let Ok(results) = &result {
            for (event, stored) in events.iter().zip(results) {
                if !matches!(stored, Stored::Refused(_)) {
                    state.committed.push(event.id.clone());
                }
            }
        }
        result.map(|results| Written {
            results,
            acquire: Duration::ZERO,
        })
    }

    async fn stored(&self, events: &[EventKey]) -> Result<Vec<bool>, WriteError> {
        let state = Self::lock(&self.state);
        Ok(events
            .iter()
            .map(|event| state.committed.contains(&event.id))
            .collect())
    }

    async fn probe(&self) -> Result<(), WriteError> {
        Self::lock(&self.state).probes += 1;
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            Err(crate::HandlerError::from(sqlx::Error::PoolTimedOut).into())
        } else {
            Ok(())
        }
    }
}
