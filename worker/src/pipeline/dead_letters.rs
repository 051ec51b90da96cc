//! Dead letters. The quarantine of refused events: an event the database refused for good
//! waits, still held (the heartbeat keeps it hidden), for the refusal fuse's window (see
//! `pipeline/refusal_fuse.rs`) before it goes to the dead-letter queue. If the fuse trips meanwhile, the
//! refusal was the database's condition and the event is released instead, to be written
//! once the condition has passed. At shutdown what waits is settled at once.
//!
//! A pointer never outlives its object: before an offloaded webhook's pointer goes to the
//! dead-letter queue, its object is rewritten onto itself ([`PayloadObjects::refresh`]), so the
//! bucket's lifecycle rule (30 days) counts from that send, past the DLQ's retention (14
//! days) and a redrive's (14 days). If S3 cannot do it now, the message is released instead
//! (and the S3 breaker opens), to be dead-lettered later.

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use webhook_shared::large_payload::PayloadPointer;

use crate::metrics::{self, Outcome};
use crate::pipeline::batch_context::{self, BatchContext};
use crate::pipeline::quarantine::Refusal;
use crate::s3::{ObjectError, PayloadObjects};
use crate::sqs::{InboundMessage, QueueClient};

/// Settles quarantined events as they come due, until `stop`; then settles the rest at once.
pub(crate) async fn run<C: QueueClient, S, O: PayloadObjects>(
    context: &BatchContext<C, S, O>,
    stop: CancellationToken,
) {
    let quarantine = &context.quarantine;
    loop {
        let wake = async {
            match quarantine.next_due() {
                Some(due) => tokio::time::sleep_until(due).await,
                None => quarantine.added().await,
            }
        };
        if stop.run_until_cancelled(wake).await.is_none() {
            settle(context, quarantine.take_due(None)).await;
            return;
        }
        settle(context, quarantine.take_due(Some(Instant::now()))).await;
    }
}

/// Sends each refusal to the dead-letter queue, or releases it if the fuse tripped since.
async fn settle<C: QueueClient, S, O: PayloadObjects>(
    context: &BatchContext<C, S, O>,
    refusals: Vec<Refusal>,
) {
    let mut release = Vec::new();
    for refusal in refusals {
        let sent = !context.fuse.tripped_since(refusal.at)
            && dead_letter(
                context,
                &refusal.message,
                refusal.object.as_ref(),
                &refusal.reason,
            )
            .await;
        if sent {
            metrics::record_outcomes(Outcome::Refused, 1);
            drop(refusal.held);
        } else {
            release.push((refusal.message, refusal.held));
        }
    }
    batch_context::release_held(context, release).await;
}

/// Moves `message` to the dead-letter queue, first refreshing `object` (its payload) so that
/// it outlives the pointer. `false` when the message was not moved: S3 could not refresh the
/// object (the caller releases the message), or SQS refused it (SQS delivers it again).
pub(crate) async fn dead_letter<C: QueueClient, S, O: PayloadObjects>(
    context: &BatchContext<C, S, O>,
    message: &InboundMessage,
    object: Option<&PayloadPointer>,
    reason: &str,
) -> bool {
    if let Some(pointer) = object {
        match context.objects.refresh(pointer).await {
            // Gone: nothing to keep (the pointer's reason says so).
            Ok(()) | Err(ObjectError::Gone) => {}
            Err(error) => {
                tracing::warn!(message_id = %message.receipt.message_id, %error, "refreshing the S3 object of a message bound for the DLQ failed; releasing it instead");
                context.s3.fail(&pointer.bucket, &error);
                return false;
            }
        }
    }
    context.queue.dead_letter(message, reason).await
}
