//! Writing, group-commit style: at most `limit` batch writes (transactions) in progress at
//! once (fixed, or moved by the adaptive limit, see `pipeline/write_limit.rs`); a writer that becomes free takes everything waiting, up to a row and a byte cap, so
//! a lone message is written at once and a backlog is written in full batches. Messages from
//! many receives share a transaction; batches are taken from the sources in turn
//! (`pipeline/write_queue.rs`), so one source's backlog does not hold back another's webhooks. A pointer to an S3 object counts the size it declares
//! against the byte cap; its object is fetched by the batch write (see `pipeline/resolve.rs`).
//!
//! Each batch is written by [`crate::pipeline::write_batch`]; what it decides goes on from here: committed
//! messages to the deleter, refused ones to the dead-letter queue, the others back to SQS
//! for a back-off. While the circuit is open (the database unreachable), nothing is written:
//! what waits is released at once.
//!
//! The limit in force is the lower of the controller's and the connection grant (see
//! `fleet/gate.rs`), so no write ever waits for a connection permit unseen; with a grant of 0
//! nothing is written and what waits is released, as with an open circuit.

use std::sync::Arc;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::db::store::EventStore;
use crate::metrics;
use crate::pipeline::batch_context::{self, BatchContext};
use crate::pipeline::delete::Committed;
use crate::pipeline::pending::Pending;
use crate::pipeline::write_batch;
use crate::pipeline::write_limit::{ConcurrencyController, WriteSample};
use crate::pipeline::write_queue::{BatchCaps, WriteQueue};
use crate::pipeline::write_split::Attempt;
use crate::s3::PayloadObjects;
use crate::sqs::QueueClient;

/// Writes until the receiver has stopped and everything received is written. At most
/// `max` writes are in progress; with `adaptive`, the [`ConcurrencyController`] moves the
/// limit between 1 and `max` from what each write shows.
pub(crate) async fn run<C: QueueClient, S: EventStore, O: PayloadObjects>(
    mut incoming: UnboundedReceiver<Pending>,
    context: Arc<BatchContext<C, S, O>>,
    (max, adaptive): (usize, bool),
    caps: BatchCaps,
    to_deleter: UnboundedSender<Vec<Committed>>,
) {
    let mut controller = ConcurrencyController::new(max, adaptive, Instant::now());
    let mut grant = context.gate.subscribe();
    let mut s3 = context.s3.circuit.subscribe();
    let mut published = limit(&controller, &context);
    metrics::gauge_concurrency_limit(published);
    let mut waiting = WriteQueue::default();
    let mut writes: JoinSet<(Attempt, usize)> = JoinSet::new();
    let mut open = true;
    loop {
        if !open && waiting.is_empty() && writes.is_empty() && context.s3.parked_count() == 0 {
            break;
        }
        tokio::select! {
            Some(done) = writes.join_next(), if !writes.is_empty() => match done {
                Ok((attempt, in_progress)) => learn(&mut controller, attempt, in_progress),
                Err(error) => tracing::error!(%error, "a write task panicked"),
            },
            received = incoming.recv(), if open => match received {
                Some(pending) => waiting.push_back(pending),
                None => open = false,
            },
            // The gate outlives the writer: the sender cannot be dropped meanwhile.
            Ok(()) = grant.changed() => {}
            // So does S3's breaker: parked pointers go back to the queue once it closes.
            Ok(()) = s3.changed() => {}
        }
        if !context.s3.is_open() {
            for pending in context.s3.take_parked().into_iter().rev() {
                waiting.push_front(pending);
            }
        } else if !open {
            // Shutting down while S3 cannot be read: another worker takes them later.
            let parked = context.s3.take_parked();
            if !parked.is_empty() {
                batch_context::release(&context, parked).await;
            }
        }
        while let Ok(pending) = incoming.try_recv() {
            waiting.push_back(pending);
        }
        let limit = limit(&controller, &context);
        if limit != published {
            published = limit;
            metrics::gauge_concurrency_limit(limit);
        }
        if (context.circuit.is_open() || limit == 0) && !waiting.is_empty() {
            batch_context::release(&context, waiting.drain()).await;
        }
        while writes.len() < limit && !waiting.is_empty() {
            let batch = waiting.take_batch(caps);
            let context = Arc::clone(&context);
            let to_deleter = to_deleter.clone();
            // Writes in progress once this one starts, itself included.
            let in_progress = writes.len() + 1;
            writes.spawn(async move {
                let attempt = write_batch::write(&context, batch, &to_deleter).await;
                (attempt, in_progress)
            });
        }
        metrics::gauge_writes_in_progress(writes.len());
        metrics::gauge_waiting("write", waiting.len());
    }
    metrics::gauge_writes_in_progress(0);
}

/// The limit in force: the controller's, within the connection grant.
fn limit<C, S, O>(controller: &ConcurrencyController, context: &BatchContext<C, S, O>) -> usize {
    controller.limit().min(context.gate.grant())
}

/// Tells the controller how a write went and logs what it decides.
fn learn(controller: &mut ConcurrencyController, attempt: Attempt, in_progress: usize) {
    let now = Instant::now();
    let change = match attempt {
        Attempt::Committed {
            rows,
            acquire,
            total,
        } => controller.on_write(
            WriteSample {
                rows,
                acquire,
                write: total.saturating_sub(acquire),
                in_progress,
            },
            now,
        ),
        Attempt::Overload => controller.on_overload(now),
        Attempt::Failed | Attempt::Unwritten => None,
    };
    let estimate = controller.estimate();
    metrics::gauge_write_latency(estimate.baseline_seconds, estimate.ratio);
    if let Some(change) = change
        && let Some(reason) = change.reason
    {
        metrics::record_limit_decrease(reason.as_str());
        tracing::debug!(
            from = change.from,
            to = change.to,
            reason = reason.as_str(),
            "write limit lowered"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqs::payload::{Offloaded, Payload};
    use crate::testing::{FakeQueue, held_messages};
    use webhook_shared::large_payload::PayloadPointer;

    #[tokio::test]
    async fn batches_respect_the_row_and_byte_caps() {
        let fake = FakeQueue::default();
        let (_window, pending) = held_messages(&fake, &[100, 100, 300, 50, 1_000, 10]).await;
        let mut waiting = WriteQueue::default();
        pending.into_iter().for_each(|p| waiting.push_back(p));
        let caps = BatchCaps {
            rows: 3,
            bytes: 500,
        };
        let sizes = |batch: Vec<Pending>| batch.iter().map(|p| p.bytes).collect::<Vec<_>>();
        assert_eq!(sizes(waiting.take_batch(caps)), vec![100, 100, 300]);
        assert_eq!(sizes(waiting.take_batch(caps)), vec![50]);
        assert_eq!(
            sizes(waiting.take_batch(caps)),
            vec![1_000],
            "alone, over the cap"
        );
        assert_eq!(sizes(waiting.take_batch(caps)), vec![10]);
        assert!(waiting.is_empty());
    }

    #[tokio::test]
    async fn a_pointer_counts_the_size_it_declares() {
        let fake = FakeQueue::default();
        let (_window, pending) = held_messages(&fake, &[100, 100, 100, 100]).await;
        let declaring = |declared_bytes: u64, p: Pending| {
            let offloaded = Offloaded {
                pointer: PayloadPointer {
                    bucket: "bucket".into(),
                    key: "key".into(),
                },
                declared_bytes,
                event: None,
            };
            Pending::new(Payload::Offloaded(offloaded), p.message, p.held)
        };
        let mut pending = pending.into_iter();
        let mut waiting = WriteQueue::default();
        let four = [
            pending.next(),
            pending.next().map(|p| declaring(300, p)),
            pending.next().map(|p| declaring(40 << 20, p)),
            pending.next(),
        ];
        four.into_iter()
            .flatten()
            .for_each(|p| waiting.push_back(p));
        let caps = BatchCaps {
            rows: 100,
            bytes: 500,
        };
        let sizes = |batch: Vec<Pending>| batch.iter().map(|p| p.bytes).collect::<Vec<_>>();
        assert_eq!(sizes(waiting.take_batch(caps)), vec![100, 300]);
        assert_eq!(
            sizes(waiting.take_batch(caps)),
            vec![40 << 20],
            "alone, over the cap"
        );
        assert_eq!(sizes(waiting.take_batch(caps)), vec![100]);
    }
}
