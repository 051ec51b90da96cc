//! Resolving the pointers of a batch, just before its transaction: the objects are fetched
//! (all of a batch at once) under the fetch budget and decoded as envelopes, so an offloaded
//! webhook is stored exactly as an inline one. No database connection is held while fetching:
//! the store takes one only for the transaction (and for the lookup below).
//!
//! The fetch budget (`WORKER_MAX_FETCHED_BYTES`) bounds the fetched bytes held across all
//! writes: a batch takes its pointers' declared sizes (the size attribute) from it at once
//! (never piece by piece, so two batches cannot each hold part and wait for the rest), at
//! most the whole budget (a single object larger than the budget waits for all of it and
//! goes alone), and gives them back when its write is done.
//!
//! What becomes of a pointer:
//! - fetched and decoded: written like any envelope; its object is deleted after the commit;
//! - S3 fails otherwise (network, throttling, permissions): the S3 breaker opens and the
//!   message is parked (see `s3_health.rs`); while the breaker is open, pointers are parked
//!   without a call to S3;
//! - the object is not an envelope, or is much larger than its pointer declared: poison
//!   (the object is kept for the dead-letter queue's redrive);
//! - the object is gone: a duplicate if the event's row exists (the object was deleted after
//!   an earlier commit), poison otherwise, and poison when the message names no event (the
//!   `source` and `event_id` attributes ingest sets).

use std::num::NonZeroU32;
use std::sync::Arc;

use tokio::task::JoinSet;
use webhook_shared::envelope::Envelope;
use webhook_shared::large_payload::PayloadPointer;

use crate::db::store::EventStore;
use crate::metrics;
use crate::pipeline::pending::Pending;
use crate::pipeline::s3_health::S3Health;
use crate::pipeline::window::Held;
use crate::s3::{ObjectError, PayloadObjects};
use crate::sqs::InboundMessage;
use crate::sqs::payload::{Offloaded, Payload};
use webhook_shared::byte_budget::{ByteBudget, Reservation};

/// How much larger than its pointer declared an object may be (a provider's retry of one
/// delivery rewrites the object with other headers, so its size may differ slightly).
pub(crate) const SIZE_SLACK: u64 = 1 << 20;

/// The process-wide budget of fetched payload bytes (`WORKER_MAX_FETCHED_BYTES`), its use in
/// `webhook_worker_fetch_budget_used_bytes`.
pub(crate) fn fetch_budget(capacity: NonZeroU32) -> ByteBudget {
    ByteBudget::new(capacity.get() as usize, metrics::FETCH_BUDGET_USED)
}

/// A message ready for the transaction.
#[derive(Debug)]
pub(crate) struct Ready {
    /// The envelope to write.
    pub(crate) envelope: Envelope,
    /// The object it came from, deleted once the event is committed.
    pub(crate) object: Option<PayloadPointer>,
    /// The message (its body is the pointer JSON for an offloaded one, else emptied).
    pub(crate) message: InboundMessage,
    /// Its place in the window.
    pub(crate) held: Held,
}

/// What resolving a batch decided.
#[derive(Debug, Default)]
pub(crate) struct Resolved {
    /// Ready for the transaction, in the batch's order.
    pub(crate) ready: Vec<Ready>,
    /// Objects gone whose events are stored: delete the messages.
    pub(crate) duplicates: Vec<(InboundMessage, Held)>,
    /// Never resolvable: to the dead-letter queue with the reason (and the object, kept).
    pub(crate) poison: Vec<(InboundMessage, Held, String, Option<PayloadPointer>)>,
    /// Not resolved this time: back off.
    pub(crate) retry: Vec<(InboundMessage, Held)>,
    /// Not fetched because S3 cannot be read: park until it can.
    pub(crate) parked: Vec<Pending>,
    /// The fetch budget taken; keep it until the fetched envelopes are dropped.
    pub(crate) budget: Option<Reservation>,
}

/// Fetches and decodes the objects of `batch`'s pointers; inline envelopes pass through.
pub(crate) async fn resolve<S: EventStore, O: PayloadObjects>(
    store: &S,
    (objects, s3): (&Arc<O>, &S3Health),
    budget: &ByteBudget,
    batch: Vec<Pending>,
) -> Resolved {
    let mut resolved = Resolved::default();
    let mut offloaded = Vec::new();
    for pending in batch {
        match pending.payload {
            Payload::Inline(envelope) => resolved.ready.push(Ready {
                envelope,
                object: None,
                message: pending.message,
                held: pending.held,
            }),
            Payload::Offloaded(pointer) => offloaded.push((pointer, pending.message, pending.held)),
        }
    }
    if offloaded.is_empty() {
        return resolved;
    }
    if s3.is_open() {
        resolved.parked = offloaded
            .into_iter()
            .map(|(o, message, held)| Pending::new(Payload::Offloaded(o), message, held))
            .collect();
        return resolved;
    }
    let declared: u64 = offloaded.iter().map(|(o, ..)| o.declared_bytes).sum();
    resolved.budget = Some(budget.take(declared).await);
    let mut fetches = JoinSet::new();
    for (index, (offloaded, ..)) in offloaded.iter().enumerate() {
        let objects = Arc::clone(objects);
        let pointer = offloaded.pointer.clone();
        let limit = offloaded.declared_bytes.saturating_add(SIZE_SLACK);
        fetches.spawn(async move { (index, objects.get(&pointer, limit).await) });
    }
    let mut fetched: Vec<Option<Result<Vec<u8>, ObjectError>>> =
        offloaded.iter().map(|_| None).collect();
    while let Some(done) = fetches.join_next().await {
        match done {
            Ok((index, result)) => fetched[index] = Some(result),
            Err(error) => tracing::error!(%error, "an S3 fetch task panicked"),
        }
    }
    let mut gone = Vec::new();
    for ((offloaded, message, held), result) in offloaded.into_iter().zip(fetched) {
        let where_ = location(&offloaded.pointer);
        match result {
            Some(Ok(bytes)) => match decode(bytes) {
                Ok(envelope) => resolved.ready.push(Ready {
                    envelope,
                    object: Some(offloaded.pointer),
                    message,
                    held,
                }),
                Err(error) => {
                    let reason = format!("S3 object {where_}: {error}");
                    let object = Some(offloaded.pointer);
                    resolved.poison.push((message, held, reason, object));
                }
            },
            Some(Err(ObjectError::Gone)) => gone.push((offloaded, message, held)),
            Some(Err(ObjectError::TooLarge { size, .. })) => {
                let reason = format!(
                    "S3 object {where_} has {size} bytes or more, its pointer declared {}",
                    offloaded.declared_bytes
                );
                let object = Some(offloaded.pointer);
                resolved.poison.push((message, held, reason, object));
            }
            Some(Err(error)) => {
                tracing::warn!(message_id = %message.receipt.message_id, object = %where_, %error, "fetching an offloaded webhook failed; it waits until S3 can be read");
                s3.fail(&offloaded.pointer.bucket, &error);
                let pending = Pending::new(Payload::Offloaded(offloaded), message, held);
                resolved.parked.push(pending);
            }
            None => resolved.retry.push((message, held)),
        }
    }
    resolve_gone(store, gone, &mut resolved).await;
    resolved
}

/// Sorts pointers whose object is gone into duplicates (the event's row exists) and poison.
async fn resolve_gone<S: EventStore>(
    store: &S,
    gone: Vec<(Offloaded, InboundMessage, Held)>,
    resolved: &mut Resolved,
) {
    let (named, unnamed): (Vec<_>, Vec<_>) =
        gone.into_iter().partition(|(o, ..)| o.event.is_some());
    for (offloaded, message, held) in unnamed {
        let reason = format!(
            "S3 object {} is gone and the message names no event (no source and event_id attributes) to look for",
            location(&offloaded.pointer)
        );
        resolved.poison.push((message, held, reason, None));
    }
    if named.is_empty() {
        return;
    }
    let keys: Vec<_> = named.iter().filter_map(|(o, ..)| o.event.clone()).collect();
    match store.stored(&keys).await {
        Ok(stored) => {
            for ((offloaded, message, held), stored) in named.into_iter().zip(stored) {
                if stored {
                    resolved.duplicates.push((message, held));
                } else {
                    let reason = format!(
                        "S3 object {} is gone and its event was never stored",
                        location(&offloaded.pointer)
                    );
                    resolved.poison.push((message, held, reason, None));
                }
            }
        }
        Err(error) => {
            tracing::warn!(events = keys.len(), %error, "looking up events whose S3 object is gone failed; they will be retried after a back-off");
            resolved
                .retry
                .extend(named.into_iter().map(|(_, message, held)| (message, held)));
        }
    }
}

/// Why an object is not an envelope.
#[derive(Debug, thiserror::Error)]
enum ObjectDecodeError {
    #[error("not UTF-8 JSON: {0}")]
    NotText(#[from] std::string::FromUtf8Error),
    #[error("not an envelope this worker can read: {0}")]
    Envelope(#[from] webhook_shared::envelope::DecodeError),
}

/// Decodes an object as an envelope (its JSON is dropped once decoded).
fn decode(bytes: Vec<u8>) -> Result<Envelope, ObjectDecodeError> {
    let json = String::from_utf8(bytes)?;
    Ok(Envelope::from_json(&json)?)
}

/// `bucket/key`, for logs and reasons.
fn location(pointer: &PayloadPointer) -> String {
    format!("{}/{}", pointer.bucket, pointer.key)
}
