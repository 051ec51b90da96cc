//! One batch write and what follows from it. The batch's pointers are resolved first (see
//! `pipeline/resolve.rs`: fetched from S3, or found to be duplicates, poison or worth a retry). The
//! batch is written in one transaction; when
//! that fails for a reason that is not transient, it is split in halves until the event at
//! fault stands alone, so one bad event never holds back the rest. Then each message goes
//! its way: committed (new or duplicate) to the deleter, refused to the dead-letter queue
//! with its reason, and, after a transient failure, back to SQS hidden for a back-off that
//! doubles with each receive. When the database is unreachable, or refuses every write alike
//! for a reason outside the data, the circuit opens and the messages are released for
//! [`RELEASE_VISIBILITY`] instead: a back-off that grows with the receive count would keep
//! them waiting long after the database is back.
//!
//! A refused event is judged by the refusal fuse (see `pipeline/refusal_fuse.rs`) and waits in quarantine
//! (see `pipeline/dead_letters.rs`) for the fuse's window before it goes to the dead-letter queue, so that
//! when many events are refused alike none of them does.

use tokio::sync::mpsc::UnboundedSender;

use crate::db::handler::Stored;
use crate::db::store::EventStore;
use crate::metrics::{self, Outcome};
use crate::pipeline::batch_context::{BatchContext, back_off, hide};
use crate::pipeline::circuit::RELEASE_VISIBILITY;
use crate::pipeline::dead_letters;
use crate::pipeline::delete::Committed;
use crate::pipeline::pending::Pending;
use crate::pipeline::quarantine::Refusal;
use crate::pipeline::refusal_fuse::Verdict;
use crate::pipeline::resolve::{Resolved, resolve};
use crate::pipeline::write_split::{Attempt, Decision, write_splitting};
use crate::s3::PayloadObjects;
use crate::sqs::QueueClient;

/// Writes `batch` and sends each message its way; returns how the first attempt went.
/// Pointers are resolved first (see `pipeline/resolve.rs`), without a database connection held.
pub(crate) async fn write<C: QueueClient, S: EventStore, O: PayloadObjects>(
    context: &BatchContext<C, S, O>,
    batch: Vec<Pending>,
    to_deleter: &UnboundedSender<Vec<Committed>>,
) -> Attempt {
    // `_budget` is kept to the end: the fetched envelopes are dropped before it is given back.
    let Resolved {
        ready,
        duplicates,
        poison,
        retry: unresolved,
        parked,
        budget: _budget,
    } = resolve(
        &context.store,
        (&context.objects, &context.s3),
        &context.budget,
        batch,
    )
    .await;
    let mut committed = Vec::new();
    let mut release = Vec::new();
    for (message, held, reason, object) in poison {
        tracing::warn!(message_id = %message.receipt.message_id, %reason, "an offloaded webhook cannot be resolved; moving its message to the DLQ (its S3 object, if any, is kept)");
        if dead_letters::dead_letter(context, &message, object.as_ref(), &reason).await {
            metrics::record_outcomes(Outcome::Poison, 1);
        } else {
            release.push((message, held));
        }
    }
    for (message, held) in duplicates {
        metrics::record_outcomes(Outcome::Duplicate, 1);
        committed.push(Committed {
            receipt: message.receipt,
            held,
            object: None,
        });
    }
    let mut retry = unresolved;
    for pending in parked {
        if let Some(full) = context.s3.park(pending) {
            retry.push((full.message, full.held));
        }
    }
    let (decided, attempt) = if ready.is_empty() {
        (Vec::new(), Attempt::Unwritten)
    } else {
        write_splitting(&context.store, &context.circuit, ready).await
    };
    let now = tokio::time::Instant::now();
    let stored = decided
        .iter()
        .filter(|(_, decision)| matches!(decision, Decision::Stored(_)))
        .count();
    context.fuse.stored(stored, now);
    for (ready, decision) in decided {
        match decision {
            Decision::Stored(Stored::New) => {
                let age = (chrono::Utc::now() - ready.envelope.received_at)
                    .to_std()
                    .unwrap_or_default();
                metrics::record_seconds(metrics::END_TO_END_SECONDS, age);
                metrics::record_outcomes(Outcome::Stored, 1);
                committed.push(Committed {
                    receipt: ready.message.receipt,
                    held: ready.held,
                    object: ready.object,
                });
            }
            Decision::Stored(Stored::Duplicate) => {
                metrics::record_outcomes(Outcome::Duplicate, 1);
                committed.push(Committed {
                    receipt: ready.message.receipt,
                    held: ready.held,
                    object: ready.object,
                });
            }
            Decision::Stored(Stored::Refused(_)) => {
                unreachable!("refusals are Decision::Refused")
            }
            Decision::Refused { reason, key } => {
                let event = format!("{}/{}", ready.envelope.source, ready.envelope.id);
                match context.fuse.refused(&key, &event, now) {
                    Verdict::DeadLetter => {
                        tracing::warn!(event_id = %ready.envelope.id, source = %ready.envelope.source, %reason, "the database refused the event for good; it goes to the DLQ unless many more are refused alike");
                        let mut message = ready.message;
                        // An offloaded event keeps its pointer (and its object): a copy of
                        // the envelope would not fit in a message.
                        if ready.object.is_none() {
                            message.body = ready.envelope.to_json();
                        }
                        context.quarantine.push(Refusal {
                            message,
                            held: ready.held,
                            reason,
                            object: ready.object,
                            at: now,
                        });
                    }
                    Verdict::Tripped(hold) => {
                        tracing::error!(%key, ?hold, "many distinct events were refused alike: the database's condition, not their data; pausing, and releasing them instead of dead-lettering");
                        metrics::record_fuse_trip();
                        context.circuit.hold(hold, &reason);
                        release.push((ready.message, ready.held));
                    }
                    Verdict::Held => release.push((ready.message, ready.held)),
                }
            }
            Decision::Retry(failure) if failure.pauses() => {
                release.push((ready.message, ready.held));
            }
            Decision::Retry(_) => retry.push((ready.message, ready.held)),
        }
    }
    if !committed.is_empty() && to_deleter.send(committed).is_err() {
        tracing::error!(
            "the deleter stopped before the writer; SQS will deliver committed messages again"
        );
    }
    back_off(context, retry).await;
    hide(context, release, Outcome::Released, |_| RELEASE_VISIBILITY).await;
    attempt
}
