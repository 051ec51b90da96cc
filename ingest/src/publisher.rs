//! The seams between the webhook handler and SQS. [`Publish`] is what handlers use ("has the
//! queue taken this message?"); [`SendBatch`] is one `SendMessageBatch` call, which the
//! [`Batcher`](crate::batcher::Batcher) drives and unit tests fake.

/// The queue did not accept the message (in time). The cause has been logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the queue did not accept the message")]
pub struct PublishError;

/// One message to enqueue: an envelope in its serialized form, with what the queue needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// The event id (message attribute, and the FIFO deduplication id).
    pub event_id: String,
    /// The source (message attribute).
    pub source: String,
    /// The FIFO message group: the source, or a header's value where configured.
    pub group_id: String,
    /// The envelope JSON.
    pub body: String,
}

/// Bytes a message counts toward SQS's 1 MiB batch limit: its body plus its attributes'
/// names, data types and values.
pub fn payload_size(message: &OutgoingMessage) -> usize {
    const ATTRIBUTE_OVERHEAD: usize = "source".len() + "event_id".len() + 2 * "String".len();
    message.body.len() + message.event_id.len() + message.source.len() + ATTRIBUTE_OVERHEAD
}

/// Something that durably enqueues messages. `Ok` means the queue has the message.
pub trait Publish: Send + Sync + 'static {
    /// Enqueues one message and waits until the queue has accepted or refused it.
    fn publish(
        &self,
        message: OutgoingMessage,
    ) -> impl Future<Output = Result<(), PublishError>> + Send;

    /// Whether the queue answers at all (for `/readyz`).
    fn probe(&self) -> impl Future<Output = bool> + Send;
}

/// What became of one entry of a batch call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryOutcome {
    /// The queue has it.
    Accepted,
    /// Refused for a reason that may pass (throttling, a server fault): try again.
    Retry,
    /// Refused for good (the request itself is wrong): do not try again.
    Reject,
}

/// One `SendMessageBatch`-like call: up to 10 messages, one outcome per message, in order.
/// `Err` means the call as a whole failed; the [`EntryOutcome`] says whether to retry it.
pub trait SendBatch: Send + Sync + 'static {
    /// Sends the messages in one call.
    fn send_batch(
        &self,
        messages: &[&OutgoingMessage],
    ) -> impl Future<Output = Result<Vec<EntryOutcome>, EntryOutcome>> + Send;

    /// Whether the queue answers at all.
    fn probe(&self) -> impl Future<Output = bool> + Send;
}
