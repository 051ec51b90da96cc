//! One write of a batch, split in halves after a failure of the data until the event at
//! fault stands alone, so one bad event never holds back the rest. A failure that is not the
//! data's (see `db/errors.rs`) is never split: the whole part is retried or released, and a
//! failure that pauses the worker opens the circuit.

use std::borrow::Cow;
use std::time::Duration;

use webhook_shared::envelope::Envelope;
use webhook_shared::large_payload::PayloadPointer;

use crate::db::errors::Failure;
use crate::db::handler::Stored;
use crate::db::store::EventStore;
use crate::db::write_error::WriteError;
use crate::pipeline::circuit::{Circuit, OpenReason};
use crate::pipeline::resolve::Ready;
use crate::pipeline::window::Held;
use crate::sqs::InboundMessage;

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

impl Attempt {
    /// How a write of `rows` begun at `started` went: `Ok(acquire)` when it committed after
    /// waiting that long for a connection.
    pub(crate) fn of(
        rows: usize,
        started: tokio::time::Instant,
        outcome: Result<Duration, &WriteError>,
    ) -> Self {
        match outcome {
            Ok(acquire) => Attempt::Committed {
                rows,
                acquire,
                total: started.elapsed(),
            },
            Err(error) if error.failure() == Failure::Overload => Attempt::Overload,
            Err(_) => Attempt::Failed,
        }
    }
}

/// What the write decided for one message.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Committed, new or a duplicate.
    Stored(Stored),
    /// Refused for good by the database or the handler.
    Refused {
        /// Why, for the dead-letter queue.
        reason: Cow<'static, str>,
        /// What the fuse compares (SQLSTATE and constraint, or the reason).
        key: Cow<'static, str>,
    },
    /// Not written for a reason that may pass; the failure says which.
    Retry(Failure),
}

impl From<Stored> for Decision {
    fn from(stored: Stored) -> Self {
        match stored {
            Stored::Refused(reason) => Self::Refused {
                key: reason.clone(),
                reason,
            },
            stored => Self::Stored(stored),
        }
    }
}

/// Writes `batch`, splitting it in halves after a permanent failure until the event at fault
/// stands alone. Transient failures are not split: the whole part is retried later. An
/// unreachable database opens the circuit.
pub(crate) async fn write_splitting<S: EventStore>(
    store: &S,
    circuit: &Circuit,
    batch: Vec<Ready>,
) -> (Vec<(Ready, Decision)>, Attempt) {
    let mut decided = Vec::with_capacity(batch.len());
    let mut first: Option<Attempt> = None;
    // The envelopes apart from the rest, so each part is written without copying them.
    let (envelopes, rest): (Vec<Envelope>, Vec<Rest>) = batch
        .into_iter()
        .map(|r| {
            let rest = Rest {
                object: r.object,
                message: r.message,
                held: r.held,
            };
            (r.envelope, rest)
        })
        .unzip();
    let mut parts = vec![(envelopes, rest)];
    while let Some((mut envelopes, mut rest)) = parts.pop() {
        let started = tokio::time::Instant::now();
        let result = store.write(&envelopes).await;
        first.get_or_insert(Attempt::of(
            envelopes.len(),
            started,
            result.as_ref().map(|written| written.acquire),
        ));
        let decisions: Vec<Decision> = match result {
            Ok(written) => written.results.into_iter().map(Decision::from).collect(),
            Err(error) if error.is_transient() => {
                let failure = error.failure();
                if failure.pauses() {
                    let reason = if failure == Failure::Systemic {
                        OpenReason::Systemic
                    } else {
                        OpenReason::Unreachable
                    };
                    circuit.open(reason, &error);
                } else {
                    tracing::warn!(events = envelopes.len(), %error, "writing failed; the messages will be retried after a back-off");
                }
                envelopes.iter().map(|_| Decision::Retry(failure)).collect()
            }
            Err(error) if envelopes.len() == 1 => {
                vec![Decision::Refused {
                    reason: error.to_string().into(),
                    key: error.refusal_key(),
                }]
            }
            Err(error) => {
                tracing::warn!(events = envelopes.len(), %error, "writing the batch failed for good; splitting it to find the event at fault");
                let half = envelopes.len() / 2;
                let second = (envelopes.split_off(half), rest.split_off(half));
                parts.push(second);
                parts.push((envelopes, rest));
                continue;
            }
        };
        for ((envelope, rest), decision) in envelopes.into_iter().zip(rest).zip(decisions) {
            let ready = Ready {
                envelope,
                object: rest.object,
                message: rest.message,
                held: rest.held,
            };
            decided.push((ready, decision));
        }
    }
    (decided, first.unwrap_or(Attempt::Failed))
}

/// A [`Ready`] without its envelope.
#[derive(Debug)]
struct Rest {
    object: Option<PayloadPointer>,
    message: InboundMessage,
    held: Held,
}
