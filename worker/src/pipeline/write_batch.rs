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

use std::borrow::Cow;

use opentelemetry::trace::Span as _;
use tokio::sync::mpsc::UnboundedSender;
use webhook_shared::large_payload::PayloadPointer;
use webhook_shared::telemetry::messaging;

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
use crate::pipeline::resolve::{Ready, Resolved, resolve};
use crate::pipeline::window::Held;
use crate::pipeline::write_split::{Attempt, Decision, write_splitting};
use crate::s3::PayloadObjects;
use crate::sqs::spans::BatchSpan;
use crate::sqs::{InboundMessage, QueueClient};

/// Writes `batch` and sends each message its way; returns how the first attempt went.
/// Pointers are resolved first (see `pipeline/resolve.rs`), without a database connection held.
pub(crate) async fn write<C: QueueClient, S: EventStore, O: PayloadObjects>(
    context: &BatchContext<C, S, O>,
    batch: Vec<Pending>,
    to_deleter: &UnboundedSender<Vec<Committed>>,
) -> Attempt {
    let span = context
        .queue
        .spans()
        .map(|spans| spans.batch(batch.iter().map(|pending| &pending.message)));
    // `_budget` is kept to the end: the fetched envelopes are dropped before it is given back.
    let Resolved {
        ready,
        duplicates,
        poison,
        retry,
        parked,
        budget: _budget,
    } = resolve(
        &context.store,
        (&context.objects, &context.s3),
        &context.budget,
        batch,
    )
    .await;
    let mut ways = Ways {
        retry,
        ..Ways::default()
    };
    settle_unresolved(
        context,
        poison,
        duplicates,
        parked,
        &mut ways,
        span.as_ref(),
    )
    .await;
    let (decided, attempt) = if ready.is_empty() {
        (Vec::new(), Attempt::Unwritten)
    } else {
        let mut write_span = span.as_ref().map(|span| span.write(ready.len()));
        let written = write_splitting(&context.store, &context.circuit, ready).await;
        if let Some(write_span) = &mut write_span {
            if let Some(error_type) = attempt_error(&written.1) {
                messaging::fail(write_span, error_type);
            }
            write_span.end();
        }
        written
    };
    let now = tokio::time::Instant::now();
    let stored = decided
        .iter()
        .filter(|(_, decision)| matches!(decision, Decision::Stored(_)))
        .count();
    context.fuse.stored(stored, now);
    for (ready, decision) in decided {
        if let Some(span) = &span {
            span.processed(&ready.message, decision_error(&decision));
        }
        route(context, ready, decision, now, &mut ways);
    }
    if let Some(span) = span {
        span.end(attempt_error(&attempt));
    }
    let Ways {
        committed,
        release,
        retry,
    } = ways;
    if !committed.is_empty() && to_deleter.send(committed).is_err() {
        tracing::error!(
            "the deleter stopped before the writer; SQS will deliver committed messages again"
        );
    }
    back_off(context, retry).await;
    hide(context, release, Outcome::Released, |_| RELEASE_VISIBILITY).await;
    attempt
}

/// Where a batch's messages go once it is written.
#[derive(Debug, Default)]
struct Ways {
    /// Stored (new or duplicate): to the deleter.
    committed: Vec<Committed>,
    /// Back to SQS for [`RELEASE_VISIBILITY`] (the database or S3 is out, or the fuse holds).
    release: Vec<(InboundMessage, Held)>,
    /// Back to SQS for their back-off (a transient failure).
    retry: Vec<(InboundMessage, Held)>,
}

/// Sends what resolving decided before any write: poison to the dead-letter queue,
/// duplicates to the deleter, pointers S3 could not serve parked with S3's breaker (or
/// retried when it is full).
async fn settle_unresolved<C: QueueClient, S, O: PayloadObjects>(
    context: &BatchContext<C, S, O>,
    poison: Vec<(InboundMessage, Held, String, Option<PayloadPointer>)>,
    duplicates: Vec<(InboundMessage, Held)>,
    parked: Vec<Pending>,
    ways: &mut Ways,
    span: Option<&BatchSpan>,
) {
    if let Some(span) = span {
        let unwritten = (poison.iter().map(|p| (&p.0, Some("poison"))))
            .chain(duplicates.iter().map(|d| (&d.0, None)))
            .chain(parked.iter().map(|p| (&p.message, Some("s3_unavailable"))));
        for (message, error_type) in unwritten {
            span.processed(message, error_type);
        }
    }
    for (message, held, reason, object) in poison {
        tracing::warn!(message_id = %message.receipt.message_id, %reason, "an offloaded webhook cannot be resolved; moving its message to the DLQ (its S3 object, if any, is kept)");
        if dead_letters::dead_letter(context, &message, object.as_ref(), &reason).await {
            metrics::record_outcomes(Outcome::Poison, 1);
        } else {
            ways.release.push((message, held));
        }
    }
    for (message, held) in duplicates {
        metrics::record_outcomes(Outcome::Duplicate, 1);
        ways.committed.push(Committed {
            receipt: message.receipt,
            held,
            object: None,
        });
    }
    for pending in parked {
        if let Some(full) = context.s3.park(pending) {
            ways.retry.push((full.message, full.held));
        }
    }
}

/// `error.type` of a batch whose first write attempt went as `attempt`.
fn attempt_error(attempt: &Attempt) -> Option<&'static str> {
    match attempt {
        Attempt::Committed { .. } | Attempt::Unwritten => None,
        Attempt::Overload => Some("database_overloaded"),
        Attempt::Failed => Some("write_failed"),
    }
}

/// `error.type` of a message's `process` span: `None` when it is stored (or was already).
fn decision_error(decision: &Decision) -> Option<&'static str> {
    match decision {
        Decision::Stored(Stored::New | Stored::Duplicate) => None,
        Decision::Stored(Stored::Refused(_)) | Decision::Refused { .. } => Some("refused"),
        Decision::Retry(failure) if failure.pauses() => Some("database_unavailable"),
        Decision::Retry(_) => Some("retry"),
    }
}

/// Sends one written message its way by what the write decided.
fn route<C, S, O>(
    context: &BatchContext<C, S, O>,
    ready: Ready,
    decision: Decision,
    now: tokio::time::Instant,
    ways: &mut Ways,
) {
    match decision {
        Decision::Stored(stored @ (Stored::New | Stored::Duplicate)) => {
            if stored == Stored::New {
                let age = (chrono::Utc::now() - ready.envelope.received_at)
                    .to_std()
                    .unwrap_or_default();
                metrics::record_seconds(metrics::END_TO_END_SECONDS, age);
                metrics::record_outcomes(Outcome::Stored, 1);
            } else {
                metrics::record_outcomes(Outcome::Duplicate, 1);
            }
            ways.committed.push(Committed {
                receipt: ready.message.receipt,
                held: ready.held,
                object: ready.object,
            });
        }
        Decision::Stored(Stored::Refused(_)) => {
            unreachable!("refusals are Decision::Refused")
        }
        Decision::Refused { reason, key } => judge_refusal(context, ready, reason, &key, now, ways),
        Decision::Retry(failure) if failure.pauses() => {
            ways.release.push((ready.message, ready.held));
        }
        Decision::Retry(_) => ways.retry.push((ready.message, ready.held)),
    }
}

/// A refused event, as the refusal fuse judges it: to quarantine (then the dead-letter
/// queue), or released with the rest when many distinct events are refused alike.
fn judge_refusal<C, S, O>(
    context: &BatchContext<C, S, O>,
    ready: Ready,
    reason: Cow<'static, str>,
    key: &str,
    now: tokio::time::Instant,
    ways: &mut Ways,
) {
    let event = format!("{}/{}", ready.envelope.source, ready.envelope.id);
    match context.fuse.refused(key, &event, now) {
        Verdict::DeadLetter => {
            tracing::warn!(event_id = %ready.envelope.id, source = %ready.envelope.source, %reason, "the database refused the event for good; it goes to the DLQ unless many more are refused alike");
            let mut message = ready.message;
            // An offloaded event keeps its pointer (and its object): a copy of the envelope
            // would not fit in a message.
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
            ways.release.push((ready.message, ready.held));
        }
        Verdict::Held => ways.release.push((ready.message, ready.held)),
    }
}
