//! What a received message carries: an envelope inline, or a pointer to one in S3 (the
//! claim-check pattern of AWS's SQS extended clients, see `webhook_shared::large_payload`).
//!
//! A message is a pointer when its attributes hold `ExtendedPayloadSize` or the legacy
//! `SQSLargePayloadSize`, as every extended client decides; its body is then the pointer
//! JSON. The receiver only reads the pointer: the object (up to tens of MiB) is fetched by the
//! writer just before the batch's transaction (see `pipeline/resolve.rs`), so the window of held
//! messages costs no more memory for offloaded webhooks than for inline ones.

use aws_sdk_sqs::types::MessageAttributeValue;
use webhook_shared::envelope::{DecodeError, Envelope};
use webhook_shared::large_payload::{
    ATTRIBUTE_PAYLOAD_SIZE, LEGACY_ATTRIBUTE_PAYLOAD_SIZE, PayloadPointer, PointerError, is_pointer,
};
use webhook_shared::sqs::{ATTRIBUTE_EVENT_ID, ATTRIBUTE_SOURCE};

use crate::sqs::InboundMessage;

/// A message's payload, decoded as far as the receiver goes.
#[derive(Debug)]
pub(crate) enum Payload {
    /// The envelope travelled in the message body.
    Inline(Envelope),
    /// The envelope is an S3 object, fetched at write time.
    Offloaded(Offloaded),
}

/// A pointer message: where the envelope is, how large it says it is, and which event it
/// is when the sender said so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Offloaded {
    /// The object holding the envelope JSON.
    pub(crate) pointer: PayloadPointer,
    /// The object's size in bytes, from the size attribute: what the batch caps and the
    /// fetch budget count for it before it is fetched.
    pub(crate) declared_bytes: u64,
    /// `(source, event id)` from ingest's message attributes; absent on pointers written by
    /// other producers (the extended client libraries).
    pub(crate) event: Option<EventKey>,
}

/// The key of a stored event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct EventKey {
    /// The webhook's source.
    pub(crate) source: String,
    /// The event id.
    pub(crate) id: String,
}

/// Why a message's payload cannot be read. Every variant makes the message poison.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PayloadError {
    /// An inline body that is not an envelope.
    #[error("not an envelope this worker can read: {0}")]
    Envelope(#[from] DecodeError),
    /// A message marked as a pointer whose body is not one.
    #[error("marked as an S3 payload pointer, but {0}")]
    Pointer(#[from] PointerError),
    /// A size attribute that is not a byte count.
    #[error("the {name} attribute is not a byte count: {value:?}")]
    BadSize {
        /// The attribute's name.
        name: &'static str,
        /// Its value, as received.
        value: String,
    },
}

impl Payload {
    /// Reads `message`'s body as a pointer (when its attributes say so) or as an envelope.
    pub(crate) fn decode(message: &InboundMessage) -> Result<Self, PayloadError> {
        if !is_pointer(message.attributes.keys().map(String::as_str)) {
            return Ok(Self::Inline(Envelope::from_json(&message.body)?));
        }
        let pointer = PayloadPointer::from_json(&message.body)?;
        let declared_bytes = declared_size(message)?;
        let text = |name: &str| {
            message
                .attributes
                .get(name)
                .and_then(MessageAttributeValue::string_value)
                .filter(|value| !value.is_empty())
        };
        let event = match (text(ATTRIBUTE_SOURCE), text(ATTRIBUTE_EVENT_ID)) {
            (Some(source), Some(id)) => Some(EventKey {
                source: source.to_owned(),
                id: id.to_owned(),
            }),
            _ => None,
        };
        Ok(Self::Offloaded(Offloaded {
            pointer,
            declared_bytes,
            event,
        }))
    }
}

/// The size attribute's value (the current name first, as the Java library reads them).
fn declared_size(message: &InboundMessage) -> Result<u64, PayloadError> {
    let (name, attribute) = [ATTRIBUTE_PAYLOAD_SIZE, LEGACY_ATTRIBUTE_PAYLOAD_SIZE]
        .into_iter()
        .find_map(|name| message.attributes.get(name).map(|value| (name, value)))
        .unwrap_or_else(|| unreachable!("is_pointer found one of the two"));
    let value = attribute.string_value().unwrap_or_default();
    value.trim().parse().map_err(|_| PayloadError::BadSize {
        name,
        value: value.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FakeQueue, attribute, envelope};

    fn pointer() -> PayloadPointer {
        PayloadPointer {
            bucket: "bucket".to_owned(),
            key: "github/e1".to_owned(),
        }
    }

    #[test]
    fn an_envelope_without_a_size_attribute_is_inline() {
        let message = FakeQueue::default().message(&envelope("e1").to_json());
        assert!(matches!(Payload::decode(&message), Ok(Payload::Inline(e)) if e.id == "e1"));
    }

    #[test]
    fn a_pointer_carries_its_size_and_event_key() {
        let mut message = FakeQueue::default().message(&pointer().to_json());
        message
            .attributes
            .insert("ExtendedPayloadSize".into(), attribute("Number", "1234"));
        message
            .attributes
            .insert("source".into(), attribute("String", "github"));
        message
            .attributes
            .insert("event_id".into(), attribute("String", "e1"));
        let Ok(Payload::Offloaded(offloaded)) = Payload::decode(&message) else {
            panic!("not a pointer");
        };
        assert_eq!(
            offloaded,
            Offloaded {
                pointer: pointer(),
                declared_bytes: 1234,
                event: Some(EventKey {
                    source: "github".into(),
                    id: "e1".into()
                }),
            }
        );
    }

    #[test]
    fn a_legacy_pointer_from_a_library_has_no_event_key() {
        let python = r#"["com.amazon.sqs.javamessaging.MessageS3Pointer", {"s3BucketName": "bucket", "s3Key": "github/e1"}]"#;
        let mut message = FakeQueue::default().message(python);
        message
            .attributes
            .insert("SQSLargePayloadSize".into(), attribute("Number", "99"));
        let Ok(Payload::Offloaded(offloaded)) = Payload::decode(&message) else {
            panic!("not a pointer");
        };
        assert_eq!(offloaded.pointer, pointer());
        assert_eq!(offloaded.declared_bytes, 99);
        assert_eq!(offloaded.event, None);
    }

    #[test]
    fn bad_pointers_and_sizes_are_poison() {
        let fake = FakeQueue::default();
        let mut envelope_marked = fake.message(&envelope("e1").to_json());
        envelope_marked
            .attributes
            .insert("ExtendedPayloadSize".into(), attribute("Number", "10"));
        let error = Payload::decode(&envelope_marked).expect_err("not a pointer");
        assert!(error.to_string().contains("S3 payload pointer"), "{error}");

        let mut bad_size = fake.message(&pointer().to_json());
        bad_size
            .attributes
            .insert("ExtendedPayloadSize".into(), attribute("Number", "-3"));
        let error = Payload::decode(&bad_size).expect_err("not a size");
        assert!(error.to_string().contains("ExtendedPayloadSize"), "{error}");
    }
}
