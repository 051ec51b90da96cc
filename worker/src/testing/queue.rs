//! [`FakeQueue`]: an in-memory SQS behind the [`QueueClient`] seam, recording what it was
//! asked (receives, deletes, visibility changes, copies sent, dead letters) and failing on
//! demand.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use crate::sqs::{FailedEntry, InboundMessage, QueueClient, QueueError, Receipt};
use crate::testing::envelope;

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
    /// Copies sent by SendMessageBatch, in order.
    pub(crate) sent: Vec<InboundMessage>,
    /// Message ids whose copies SendMessageBatch refuses (retryable).
    pub(crate) fail_sends_of: Vec<String>,
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
            trace_header: None,
            group_id: None,
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
                trace_header: None,
                group_id: None,
            };
            state.visible.push_back(message);
        }
        Ok(Vec::new())
    }

    async fn send_batch(
        &self,
        messages: &[InboundMessage],
    ) -> Result<Vec<FailedEntry>, QueueError> {
        let mut state = self.state();
        let mut failed = Vec::new();
        for (index, message) in messages.iter().enumerate() {
            if state.fail_sends_of.contains(&message.receipt.message_id) {
                failed.push(FailedEntry {
                    index,
                    code: "InternalError".into(),
                    sender_fault: false,
                });
                continue;
            }
            state.sent.push(message.clone());
        }
        Ok(failed)
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
