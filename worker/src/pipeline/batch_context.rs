//! What every batch write needs ([`BatchContext`]: the queue, the database, S3, the
//! breakers, the budgets), and the ways a message goes back to SQS unwritten: released for
//! [`RELEASE_VISIBILITY`] while the database or S3 is out, or hidden for a back-off that
//! doubles with each receive ([`RetryBackoff`]) after a transient failure.

use std::sync::Arc;
use std::time::Duration;

use crate::fleet::Gate;
use crate::metrics::{self, Outcome};
use crate::pipeline::circuit::{Circuit, RELEASE_VISIBILITY};
use crate::pipeline::lag::Lag;
use crate::pipeline::pending::Pending;
use crate::pipeline::quarantine::Quarantine;
use crate::pipeline::refusal_fuse::RefusalFuse;
use crate::pipeline::s3_health::S3Health;
use crate::pipeline::window::Held;
use crate::sqs::{InboundMessage, Queue, QueueClient, Receipt};
use webhook_shared::byte_budget::ByteBudget;

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
    pub(crate) budget: ByteBudget,
    /// Judges refusals: the event's fault, or the database's condition.
    pub(crate) fuse: RefusalFuse,
    /// Refused events waiting for the fuse's window before the dead-letter queue.
    pub(crate) quarantine: Quarantine,
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
pub(crate) async fn back_off<C: QueueClient, S, O>(
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
pub(crate) async fn hide<C: QueueClient, S, O>(
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
                message.source(),
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
