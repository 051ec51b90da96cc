//! The seams between the webhook handler and SQS. [`Publish`] is what handlers use ("has the
//! queue taken this message?"); [`SendBatch`] is one `SendMessageBatch` call, which the
//! [`Batcher`](crate::sqs::batcher::Batcher) drives and unit tests fake. [`OutgoingMessage`] knows
//! its attributes and how much of SQS's size limit it takes.

use std::borrow::Cow;
use std::num::NonZeroU64;

use opentelemetry::trace::SpanContext;
use webhook_shared::large_payload::ATTRIBUTE_PAYLOAD_SIZE;
use webhook_shared::sqs::{ATTRIBUTE_EVENT_ID, ATTRIBUTE_SOURCE, MAX_MESSAGE_BYTES};
use webhook_shared::telemetry::carrier::TRACEPARENT;

/// The queue did not accept the message (in time). The cause has been logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the queue did not accept the message")]
pub(crate) struct PublishError;

/// One message to enqueue: an envelope in its serialized form, with what the queue needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutgoingMessage {
    /// The event id (message attribute, and the FIFO deduplication id).
    pub event_id: String,
    /// The source (message attribute).
    pub source: String,
    /// The FIFO message group: the source, or a header's value where configured.
    pub group_id: String,
    /// The envelope JSON, or for an offloaded webhook the S3 pointer
    /// ([`PayloadPointer::to_json`](webhook_shared::large_payload::PayloadPointer::to_json)).
    pub body: String,
    /// For an offloaded webhook: the S3 object's size in bytes, sent as the extended clients'
    /// `ExtendedPayloadSize` attribute (`Number`). `None` for an inline envelope.
    pub extended_payload_size: Option<NonZeroU64>,
    /// The context of the message's `create` span, when tracing is on.
    pub trace: Option<MessageTrace>,
}

/// The trace context a message carries: its `create` span's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MessageTrace {
    /// The span's context (the `send` span links to it).
    pub context: SpanContext,
    /// As a W3C `traceparent` (the message attribute of that name; counts toward the size).
    pub traceparent: String,
    /// As an X-Ray trace header (the `AWSTraceHeader` system attribute; does not count).
    pub xray: Option<String>,
}

/// SQS data type of the attributes ingest sends as text.
const STRING: &str = "String";
/// SQS data type of the payload size attribute.
const NUMBER: &str = "Number";

/// One message attribute as sent to SQS: a value under a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Attribute<'a> {
    /// The attribute's name.
    pub name: &'static str,
    /// Its SQS data type (`String` or `Number`).
    pub data_type: &'static str,
    /// Its value, as text.
    pub value: Cow<'a, str>,
}

impl Attribute<'_> {
    /// Bytes it counts toward SQS's size limits: its name, data type and value, in UTF-8.
    pub(crate) fn size(&self) -> usize {
        self.name.len() + self.data_type.len() + self.value.len()
    }
}

impl OutgoingMessage {
    /// The message attributes it is sent with: the one list that both the SQS entry and
    /// [`payload_size`] are made from.
    pub(crate) fn attributes(&self) -> Vec<Attribute<'_>> {
        let mut attributes = vec![
            Attribute {
                name: ATTRIBUTE_SOURCE,
                data_type: STRING,
                value: Cow::Borrowed(&self.source),
            },
            Attribute {
                name: ATTRIBUTE_EVENT_ID,
                data_type: STRING,
                value: Cow::Borrowed(&self.event_id),
            },
        ];
        if let Some(trace) = &self.trace {
            attributes.push(Attribute {
                name: TRACEPARENT,
                data_type: STRING,
                value: Cow::Borrowed(&trace.traceparent),
            });
        }
        if let Some(size) = self.extended_payload_size {
            attributes.push(Attribute {
                name: ATTRIBUTE_PAYLOAD_SIZE,
                data_type: NUMBER,
                value: Cow::Owned(size.to_string()),
            });
        }
        attributes
    }
}

/// Bytes a message counts toward SQS's 1 MiB limits (per message, and per batch call): as SQS
/// counts them, its body plus, for each message attribute, the name, the data type and the
/// value, all in UTF-8 bytes.
pub(crate) fn payload_size(message: &OutgoingMessage) -> usize {
    let attributes: usize = message.attributes().iter().map(Attribute::size).sum();
    message.body.len() + attributes
}

/// Whether SQS can take the message at all: its [`payload_size`] is at most 1 MiB. One that
/// does not fit is refused up front (413), never sent.
pub(crate) fn fits_one_message(message: &OutgoingMessage) -> bool {
    payload_size(message) <= MAX_MESSAGE_BYTES
}

/// Something that durably enqueues messages. `Ok` means the queue has the message.
pub(crate) trait Publish: Send + Sync + 'static {
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
pub(crate) enum EntryOutcome {
    /// The queue has it.
    Accepted,
    /// Refused for a reason that may pass (throttling, a server fault): try again.
    Retry,
    /// Refused for good (the request itself is wrong): do not try again.
    Reject,
}

/// One `SendMessageBatch`-like call: up to 10 messages, one outcome per message, in order.
/// `Err` means the call as a whole failed; the [`EntryOutcome`] says whether to retry it.
pub(crate) trait SendBatch: Send + Sync + 'static {
    /// Sends the messages in one call.
    fn send_batch(
        &self,
        messages: &[&OutgoingMessage],
    ) -> impl Future<Output = Result<Vec<EntryOutcome>, EntryOutcome>> + Send;

    /// Whether the queue answers at all.
    fn probe(&self) -> impl Future<Output = bool> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(event_id: &str, source: &str, body: &str) -> OutgoingMessage {
        OutgoingMessage {
            event_id: event_id.to_owned(),
            source: source.to_owned(),
            group_id: source.to_owned(),
            body: body.to_owned(),
            extended_payload_size: None,
            trace: None,
        }
    }

    #[test]
    fn size_is_the_body_plus_each_attributes_name_type_and_value_in_utf8_bytes() {
        let sent = message("ïd", "acme", "bödy");
        // "bödy" 5 + ("source" 6 + "String" 6 + "acme" 4) + ("event_id" 8 + "String" 6 + "ïd" 3)
        assert_eq!(payload_size(&sent), 5 + 16 + 17);
    }

    #[test]
    fn a_message_fits_up_to_exactly_1_mib_attributes_included() {
        let attributes = "source".len() + "event_id".len() + 2 * "String".len() + 4 + 36;
        let id = "0".repeat(36);
        let at_limit = message(&id, "acme", &"x".repeat(MAX_MESSAGE_BYTES - attributes));
        assert_eq!(payload_size(&at_limit), MAX_MESSAGE_BYTES);
        assert!(fits_one_message(&at_limit));
        let over = message(&id, "acme", &"x".repeat(MAX_MESSAGE_BYTES - attributes + 1));
        assert!(!fits_one_message(&over));
        // A body under 1 MiB whose attributes take it over does not fit either.
        let body_under = message(&id, "acme", &"x".repeat(MAX_MESSAGE_BYTES - 10));
        assert!(!fits_one_message(&body_under));
    }

    #[test]
    fn a_pointer_carries_its_object_size_as_a_number_attribute() {
        let mut pointer = message("d-1", "github", "[]");
        pointer.extended_payload_size = NonZeroU64::new(26_214_400);
        let attributes = pointer.attributes();
        let size = attributes.last().expect("three attributes");
        assert_eq!(
            (size.name, size.data_type, size.value.as_ref()),
            ("ExtendedPayloadSize", "Number", "26214400")
        );
        // "[]" 2 + source 18 + event_id 17 + ("ExtendedPayloadSize" 19 + "Number" 6 + 8)
        assert_eq!(payload_size(&pointer), 2 + 18 + 17 + 33);
    }

    #[test]
    fn a_traced_message_counts_its_traceparent_attribute() {
        let mut traced = message("d-1", "github", "{}");
        let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        traced.trace = Some(MessageTrace {
            context: SpanContext::empty_context(),
            traceparent: traceparent.to_owned(),
            xray: None,
        });
        // "traceparent" 11 + "String" 6 + 55
        assert_eq!(payload_size(&traced), 2 + 18 + 17 + 72);
    }
}
