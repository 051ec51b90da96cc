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

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;

use crate::db::store::Store;
use crate::fleet::Gate;
use crate::handler::Stored;
use crate::metrics::{self, Outcome};
use crate::pipeline::circuit::{Circuit, RELEASE_VISIBILITY};
use crate::pipeline::dead_letters::{self, Quarantine, Refusal};
use crate::pipeline::delete::Committed;
use crate::pipeline::lag::Lag;
use crate::pipeline::refusal_fuse::{RefusalFuse, Verdict};
use crate::pipeline::resolve::{FetchBudget, Resolved, resolve};
use crate::pipeline::s3_health::S3Health;
use crate::pipeline::window::Held;
use crate::pipeline::write::Pending;
use crate::pipeline::write_split::{Decision, write_splitting};
use crate::s3::ObjectStore;
use crate::sqs::{InboundMessage, Queue, QueueClient, Receipt};

/// How long failed messages stay hidden before their next try: `base × 2^(receives − 1)`,
/// capped at `max`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryBackoff {
    /// Delay after the first failed receive.
    pub(crate) base: Duration,
    /// Longest delay.
    pub(crate) max: Duration,
}

impl RetryBackoff {
    /// The visibility to set after the `receive_count`th receive failed.
    pub(crate) fn delay(&self, receive_count: u32) -> Duration {
        let exponent = receive_count.saturating_sub(1).min(20);
        self.base.saturating_mul(1 << exponent).min(self.max)
    }
}

/// What every batch write needs.
#[derive(Debug)]
pub(crate) struct BatchContext<C, S, O> {
    /// The queue (dead letters and back-off).
    pub(crate) queue: Arc<Queue<C>>,
    /// The database.
    pub(crate) store: S,
    /// The lag, told of messages put back for a back-off.
    pub(crate) lag: Arc<Lag>,
    /// The back-off after transient failures.
    pub(crate) backoff: RetryBackoff,
    /// How long held messages stay hidden (the lag forgets a backed-off message after its
    /// back-off plus this).
    pub(crate) visibility: Duration,
    /// Opened by a write that finds the database unreachable.
    pub(crate) circuit: Arc<Circuit>,
    /// The connection gate: the writer starts no more writes than its grant.
    pub(crate) gate: Arc<Gate>,
    /// Where offloaded webhooks are.
    pub(crate) objects: Arc<O>,
    /// S3's breaker and the pointers it parked.
    pub(crate) s3: Arc<S3Health>,
    /// The bound on fetched payload bytes held at once.
    pub(crate) budget: FetchBudget,
    /// Judges refusals: the event's fault, or the database's condition.
    pub(crate) fuse: RefusalFuse,
    /// Refused events waiting for the fuse's window before the dead-letter queue.
    pub(crate) quarantine: Quarantine,
}

/// How the first attempt at a batch went: what the adaptive limit learns from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Attempt {
    /// Committed.
    Committed {
        /// Rows in the transaction.
        rows: usize,
        /// Time waiting for a pool connection.
        acquire: Duration,
        /// Time in all, waiting included.
        total: Duration,
    },
    /// Failed because the database is saturated (53300, 57014, 40001, 40P01).
    Overload,
    /// Failed otherwise (permanent, unreachable, other transient).
    Failed,
    /// Nothing reached the database (no pointer of the batch could be resolved).
    Unwritten,
}

/// Writes `batch` and sends each message its way; returns how the first attempt went.
/// Pointers are resolved first (see `pipeline/resolve.rs`), without a database connection held.
pub(crate) async fn write<C: QueueClient, S: Store, O: ObjectStore>(
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

/// Gives messages back to SQS unwritten, hidden for [`RELEASE_VISIBILITY`]: the database is
/// unreachable and the circuit is open.
pub(crate) async fn release<C: QueueClient, S, O>(
    context: &BatchContext<C, S, O>,
    pending: Vec<Pending>,
) {
    let messages = pending.into_iter().map(|p| (p.message, p.held)).collect();
    release_held(context, messages).await;
}

/// Gives held messages back to SQS, hidden for [`RELEASE_VISIBILITY`].
pub(crate) async fn release_held<C: QueueClient, S, O>(
    context: &BatchContext<C, S, O>,
    messages: Vec<(InboundMessage, Held)>,
) {
    hide(context, messages, Outcome::Released, |_| RELEASE_VISIBILITY).await;
}

/// Hides messages for their back-off (per-entry delays in the same calls).
async fn back_off<C: QueueClient, S, O>(
    context: &BatchContext<C, S, O>,
    retry: Vec<(InboundMessage, Held)>,
) {
    let backoff = context.backoff;
    hide(context, retry, Outcome::Retried, |message| {
        backoff.delay(message.receive_count)
    })
    .await;
}

/// Hides each message for `delay(message)`, counts them as `outcome`, and tells the lag, which
/// keeps them in view until that delay plus a visibility timeout has passed. They leave the
/// window once hidden.
async fn hide<C: QueueClient, S, O>(
    context: &BatchContext<C, S, O>,
    messages: Vec<(InboundMessage, Held)>,
    outcome: Outcome,
    delay: impl Fn(&InboundMessage) -> Duration,
) {
    if messages.is_empty() {
        return;
    }
    metrics::record_outcomes(outcome, messages.len());
    let entries: Vec<(Receipt, Duration)> = messages
        .iter()
        .map(|(message, _)| {
            let delay = delay(message);
            context.lag.backed_off(
                &message.receipt.message_id,
                message.sent_ms,
                delay + context.visibility,
            );
            (message.receipt.clone(), delay)
        })
        .collect();
    context.queue.change_visibility(&entries).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_receive_and_is_capped() {
        let backoff = RetryBackoff {
            base: Duration::from_secs(2),
            max: Duration::from_secs(60),
        };
        assert_eq!(backoff.delay(1), Duration::from_secs(2));
        assert_eq!(backoff.delay(2), Duration::from_secs(4));
        assert_eq!(backoff.delay(5), Duration::from_secs(32));
        assert_eq!(backoff.delay(6), Duration::from_secs(60));
        assert_eq!(backoff.delay(1000), Duration::from_secs(60));
        assert_eq!(backoff.delay(0), Duration::from_secs(2));
    }
}
