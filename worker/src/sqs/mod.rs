//! Everything the worker does with SQS goes through two narrow seams: [`QueueClient`] for
//! one queue's messages (receive, delete a batch, change visibility of a batch, send a batch
//! of copies to it, send to its DLQ),
//! implemented for real by [`crate::sqs::client::SqsQueue`], and
//! [`QueueAdmin`](crate::sqs::admin::QueueAdmin) for queue attributes and message moves
//! (`admin.rs`, used by `queue_info.rs`, `redrive/` and the depth gauges); unit tests put
//! fakes behind both. [`Queue`] owns a client and
//! adds what the worker relies on: chunks of at most 10, every batch entry checked and failed
//! entries retried, poison moved to the DLQ (send, then delete) with a reason that is always
//! valid UTF-8 of bounded length. `spans.rs` makes the messaging spans of what the worker does
//! with the queue's messages when tracing is on.

pub(crate) mod admin;
pub(crate) mod client;
pub(crate) mod payload;
pub(crate) mod queue_info;
pub(crate) mod redrive;
pub(crate) mod spans;

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sqs::types::MessageAttributeValue;
use opentelemetry::trace::SpanContext;
use webhook_shared::telemetry::carrier;

use crate::sqs::spans::Spans;
use webhook_shared::sqs::MAX_BATCH_ENTRIES;

/// Attempts per batch entry before a failure is logged and left to SQS.
const ENTRY_ATTEMPTS: u32 = 3;
/// Pause between attempts.
const ENTRY_RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Longest `poison_reason` attribute, in bytes.
pub(crate) const MAX_REASON_BYTES: usize = 256;

/// A message as received.
#[derive(Debug, Clone)]
pub(crate) struct InboundMessage {
    /// Handle for deletes and visibility changes.
    pub(crate) receipt: Receipt,
    /// The body (the envelope's JSON, or poison).
    pub(crate) body: String,
    /// `SentTimestamp`, milliseconds since the epoch, when SQS gave it.
    pub(crate) sent_ms: Option<u64>,
    /// `ApproximateReceiveCount` (1 on the first receive).
    pub(crate) receive_count: u32,
    /// The message attributes, carried into the DLQ.
    pub(crate) attributes: HashMap<String, MessageAttributeValue>,
    /// The `AWSTraceHeader` system attribute (X-Ray's form of a trace context), if set.
    pub(crate) trace_header: Option<String>,
    /// The `MessageGroupId` (FIFO queues and fair queues), if set.
    pub(crate) group_id: Option<String>,
}

impl InboundMessage {
    /// The `source` attribute ingest sets, if any.
    pub(crate) fn source(&self) -> Option<&str> {
        self.attributes
            .get("source")
            .and_then(MessageAttributeValue::string_value)
    }

    /// The context the message was created in (ingest's `create` span): its `traceparent`
    /// attribute, else its `AWSTraceHeader` (from an X-Ray-instrumented producer).
    pub(crate) fn creation_context(&self) -> Option<SpanContext> {
        self.attributes
            .get(carrier::TRACEPARENT)
            .and_then(MessageAttributeValue::string_value)
            .and_then(carrier::from_traceparent)
            .or_else(|| {
                self.trace_header
                    .as_deref()
                    .and_then(carrier::from_xray_header)
            })
    }
}

/// One message's identity for batch calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Receipt {
    /// The SQS message id (for logs).
    pub(crate) message_id: String,
    /// The receipt handle from the receive.
    pub(crate) handle: String,
}

/// A batch entry SQS refused.
#[derive(Debug, Clone)]
pub(crate) struct FailedEntry {
    /// Index of the entry in the request.
    pub(crate) index: usize,
    /// SQS's error code.
    pub(crate) code: String,
    /// Whether the request was at fault (not worth retrying).
    pub(crate) sender_fault: bool,
}

/// A whole call failed (network, throttling, SQS down).
#[derive(Debug, thiserror::Error)]
#[error("{operation} failed: {message}")]
pub(crate) struct QueueError {
    /// The SQS operation.
    pub(crate) operation: &'static str,
    /// The cause, with its context.
    pub(crate) message: String,
}

/// The SQS operations the worker uses, one call each, nothing more.
pub(crate) trait QueueClient: Send + Sync + 'static {
    /// Long-polls for at most `max` messages, hidden for `visibility` once received.
    fn receive(
        &self,
        max: usize,
        visibility: Duration,
    ) -> impl Future<Output = Result<Vec<InboundMessage>, QueueError>> + Send;

    /// Deletes up to 10 messages; returns the entries SQS refused.
    fn delete_batch(
        &self,
        receipts: &[Receipt],
    ) -> impl Future<Output = Result<Vec<FailedEntry>, QueueError>> + Send;

    /// Sets each message's visibility timeout (up to 10); returns the entries SQS refused.
    fn change_visibility_batch(
        &self,
        entries: &[(Receipt, Duration)],
    ) -> impl Future<Output = Result<Vec<FailedEntry>, QueueError>> + Send;

    /// Sends copies of up to 10 messages to this queue: body and message attributes, and on
    /// a FIFO queue the group id, with the message id as deduplication id. Returns the
    /// entries SQS refused (their index in `messages`).
    fn send_batch(
        &self,
        messages: &[InboundMessage],
    ) -> impl Future<Output = Result<Vec<FailedEntry>, QueueError>> + Send;

    /// Sends a copy of `message` to the dead-letter queue with a `poison_reason` attribute.
    fn send_to_dlq(
        &self,
        message: &InboundMessage,
        reason: &str,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Whether a dead-letter queue is known.
    fn has_dlq(&self) -> bool;
}

/// The queue as the worker uses it: batched, checked and retried calls over a client.
#[derive(Debug)]
pub(crate) struct Queue<C> {
    client: C,
    spans: Option<Spans>,
}

impl<C: QueueClient> Queue<C> {
    /// Wraps `client`.
    pub(crate) fn new(client: C) -> Self {
        Self {
            client,
            spans: None,
        }
    }

    /// The same queue, with its messaging spans made by `spans` (tracing on).
    pub(crate) fn with_spans(self, spans: Option<Spans>) -> Self {
        Self { spans, ..self }
    }

    /// The messaging spans, when tracing is on.
    pub(crate) fn spans(&self) -> Option<&Spans> {
        self.spans.as_ref()
    }

    /// The client (for receiving, which needs no retries here).
    pub(crate) fn client(&self) -> &C {
        &self.client
    }

    /// Deletes messages, ten per call, retrying failed entries. Returns how many could not
    /// be deleted (SQS will deliver those again; the table makes that harmless).
    pub(crate) async fn delete(&self, receipts: &[Receipt]) -> usize {
        let mut undeleted = 0;
        for chunk in receipts.chunks(MAX_BATCH_ENTRIES) {
            let entries: Vec<(Receipt, Duration)> =
                chunk.iter().map(|r| (r.clone(), Duration::ZERO)).collect();
            undeleted += self
                .with_entry_retries("DeleteMessageBatch", entries, |batch| async move {
                    let receipts: Vec<Receipt> = batch.into_iter().map(|(r, _)| r).collect();
                    self.client.delete_batch(&receipts).await
                })
                .await
                .len();
        }
        undeleted
    }

    /// Sets visibility timeouts, ten per call, retrying failed entries. Returns the receipts
    /// whose visibility could not be changed.
    pub(crate) async fn change_visibility(&self, entries: &[(Receipt, Duration)]) -> Vec<Receipt> {
        let mut unchanged = Vec::new();
        for chunk in entries.chunks(MAX_BATCH_ENTRIES) {
            unchanged.extend(
                self.with_entry_retries(
                    "ChangeMessageVisibilityBatch",
                    chunk.to_vec(),
                    |batch| async move { self.client.change_visibility_batch(&batch).await },
                )
                .await
                .into_iter()
                .map(|(receipt, _)| receipt),
            );
        }
        unchanged
    }

    /// Moves a poison message to the DLQ at once (a copy with the reason, then a delete), so
    /// it burns no retries and blocks nothing. Without a known DLQ, or if the send fails, the
    /// message is left to SQS's own redrive. Returns whether it was moved.
    pub(crate) async fn dead_letter(&self, message: &InboundMessage, reason: &str) -> bool {
        if !self.client.has_dlq() {
            tracing::error!(
                message_id = %message.receipt.message_id,
                reason,
                "no dead-letter queue known (set DLQ_URL or a RedrivePolicy); leaving the poison message to SQS"
            );
            return false;
        }
        let reason = bounded_reason(reason);
        if let Err(error) = self.client.send_to_dlq(message, reason).await {
            tracing::warn!(message_id = %message.receipt.message_id, %error, "moving a poison message to the DLQ failed; SQS will deliver it again");
            return false;
        }
        self.delete(std::slice::from_ref(&message.receipt)).await == 0
    }

    /// Runs a batch call, sending the failed entries again up to [`ENTRY_ATTEMPTS`] times.
    /// Returns the entries that never succeeded.
    async fn with_entry_retries<F, Fut>(
        &self,
        operation: &'static str,
        entries: Vec<(Receipt, Duration)>,
        call: F,
    ) -> Vec<(Receipt, Duration)>
    where
        F: Fn(Vec<(Receipt, Duration)>) -> Fut,
        Fut: Future<Output = Result<Vec<FailedEntry>, QueueError>>,
    {
        let mut pending = entries;
        let mut given_up = Vec::new();
        for attempt in 1..=ENTRY_ATTEMPTS {
            let failed = match call(pending.clone()).await {
                Ok(failed) => failed,
                Err(error) => {
                    tracing::warn!(operation, attempt, entries = pending.len(), %error, "SQS batch call failed");
                    tokio::time::sleep(ENTRY_RETRY_PAUSE).await;
                    continue;
                }
            };
            let mut retry = Vec::new();
            for entry in &failed {
                let Some(item) = pending.get(entry.index) else {
                    continue;
                };
                tracing::warn!(operation, attempt, message_id = %item.0.message_id, code = %entry.code, "SQS batch entry failed");
                if entry.sender_fault {
                    given_up.push(item.clone());
                } else {
                    retry.push(item.clone());
                }
            }
            if retry.is_empty() {
                return given_up;
            }
            pending = retry;
            tokio::time::sleep(ENTRY_RETRY_PAUSE).await;
        }
        tracing::error!(
            operation,
            entries = pending.len(),
            "giving up on SQS batch entries; the messages will be delivered again"
        );
        given_up.extend(pending);
        given_up
    }
}

/// `reason` cut to at most [`MAX_REASON_BYTES`] bytes at a character boundary (a byte cut
/// inside a multi-byte character would panic).
pub(crate) fn bounded_reason(reason: &str) -> &str {
    &reason[..reason.floor_char_boundary(MAX_REASON_BYTES)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeQueue;

    #[test]
    fn reasons_are_cut_at_a_character_boundary() {
        let euros = format!(r#"{{"v":"{}"}}"#, "€".repeat(100));
        let cut = bounded_reason(&euros);
        assert!(cut.len() <= MAX_REASON_BYTES && cut.len() >= MAX_REASON_BYTES - 3);
        assert!(euros.starts_with(cut));
        assert_eq!(bounded_reason("short"), "short");
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_multibyte_reason_moves_poison_without_panicking() {
        let fake = FakeQueue::default();
        let queue = Queue::new(fake.clone());
        let message = fake.message(&format!(r#"{{"v":"{}"}}"#, "€".repeat(100)));
        let reason = format!("not an envelope: {}", message.body);
        assert!(queue.dead_letter(&message, &reason).await);
        let dlq = fake.dlq();
        assert_eq!(dlq.len(), 1);
        assert!(dlq[0].1.len() <= MAX_REASON_BYTES);
        assert_eq!(fake.deleted(), vec![message.receipt.message_id.clone()]);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_entries_are_retried_and_counted() {
        let fake = FakeQueue::default();
        let queue = Queue::new(fake.clone());
        let receipts: Vec<Receipt> = (0..25)
            .map(|i| fake.message(&i.to_string()).receipt)
            .collect();
        fake.fail_deletes_of(&receipts[3].message_id, 1);
        fake.fail_deletes_of(&receipts[4].message_id, 99);
        assert_eq!(queue.delete(&receipts).await, 1, "one entry never succeeds");
        assert_eq!(fake.deleted().len(), 24);
        assert_eq!(
            fake.delete_calls(),
            vec![10, 2, 1, 10, 5],
            "chunks of ten, failed entries sent again"
        );
    }
}
