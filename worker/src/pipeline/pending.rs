//! [`Pending`]: a decoded message on its way through the writer, holding its place in the
//! window. Every stage after the receive passes these along (the writer, the batch write,
//! the resolve step, S3's breaker that parks them).

use crate::pipeline::window::Held;
use crate::sqs::payload::Payload;
use crate::sqs::{InboundMessage, Receipt};

/// A decoded message waiting to be written, holding its place in the window.
#[derive(Debug)]
pub(crate) struct Pending {
    /// The envelope, or the pointer to it (fetched just before the transaction).
    pub(crate) payload: Payload,
    /// The message as received (an inline body is dropped once decoded: only the metadata
    /// stays; a pointer's is kept, for the dead-letter queue).
    pub(crate) message: InboundMessage,
    /// Its place in the window.
    pub(crate) held: Held,
    /// What it counts for in the byte cap: the body's size, or for a pointer, the size of
    /// the object it declares.
    pub(crate) bytes: usize,
}

impl Pending {
    /// A decoded message; an inline body is dropped (the envelope can rebuild it).
    pub(crate) fn new(payload: Payload, mut message: InboundMessage, held: Held) -> Self {
        let bytes = match &payload {
            Payload::Inline(_) => {
                let bytes = message.body.len();
                message.body = String::new();
                bytes
            }
            Payload::Offloaded(offloaded) => {
                usize::try_from(offloaded.declared_bytes).unwrap_or(usize::MAX)
            }
        };
        Self {
            payload,
            message,
            held,
            bytes,
        }
    }

    /// The message's receipt.
    pub(crate) fn receipt(&self) -> &Receipt {
        &self.message.receipt
    }
}
