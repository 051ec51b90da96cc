//! Processing one receive's messages: decode; move poison to the DLQ at once; write the rest
//! in one transaction through the [`Handler`]; delete what was committed; give what failed a
//! back-off visibility so a sick database is not hammered. While the write runs, a heartbeat
//! extends the messages' visibility so slow work is not delivered twice.

use std::time::Duration;

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use sqlx::PgPool;
use tokio::time::Instant;
use webhook_shared::envelope::Envelope;

use crate::db_errors::is_transient;
use crate::handler::Handler;
use crate::metrics::{self, InFlight, Outcome};
use crate::queue::{Queues, Receipt};

/// How long failed messages stay hidden before their next try: `base × 2^(receives − 1)`,
/// capped at `max`.
#[derive(Debug, Clone, Copy)]
pub struct RetryBackoff {
    /// Delay after the first failed receive.
    pub base: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl RetryBackoff {
    /// The visibility to set after the `receive_count`th receive failed.
    pub fn delay(&self, receive_count: u32) -> Duration {
        let exponent = receive_count.saturating_sub(1).min(20);
        self.base.saturating_mul(1 << exponent).min(self.max)
    }
}

/// Processes received messages; shared by every processing task.
#[derive(Debug)]
pub struct Processor<H> {
    queues: Queues,
    pool: PgPool,
    handler: H,
    visibility: Duration,
    backoff: RetryBackoff,
}

/// A message that decoded to an envelope.
struct Decoded {
    envelope: Envelope,
    receipt: Receipt,
    receive_count: u32,
}

impl<H: Handler> Processor<H> {
    /// A processor writing through `handler`; `visibility` is the queue's visibility timeout
    /// (heartbeats run at half of it).
    pub fn new(
        queues: Queues,
        pool: PgPool,
        handler: H,
        visibility: Duration,
        backoff: RetryBackoff,
    ) -> Self {
        Self {
            queues,
            pool,
            handler,
            visibility,
            backoff,
        }
    }

    /// Processes one receive's messages to the end: each is stored and deleted, moved to the
    /// DLQ, or hidden for its back-off.
    pub async fn process(&self, messages: Vec<Message>) {
        let _in_flight = InFlight::start(messages.len());
        let mut decoded = Vec::with_capacity(messages.len());
        for message in messages {
            match Envelope::from_json(message.body().unwrap_or_default()) {
                Ok(envelope) => decoded.push(Decoded {
                    envelope,
                    receipt: receipt_of(&message),
                    receive_count: receive_count_of(&message),
                }),
                Err(error) => {
                    metrics::record_outcome(Outcome::Poison);
                    tracing::warn!(message_id = message.message_id(), %error, "poison message: moving it to the DLQ");
                    self.queues.move_to_dlq(&message, &error.to_string()).await;
                }
            }
        }
        if decoded.is_empty() {
            return;
        }
        let receipts: Vec<Receipt> = decoded.iter().map(|d| d.receipt.clone()).collect();
        let events: Vec<Envelope> = decoded.iter().map(|d| d.envelope.clone()).collect();
        let results = self.with_heartbeat(&receipts, self.write(&events)).await;
        self.finish(decoded, results).await;
    }

    /// Runs `work` while extending the messages' visibility every half visibility timeout.
    async fn with_heartbeat<T>(&self, receipts: &[Receipt], work: impl Future<Output = T>) -> T {
        let interval = self.visibility / 2;
        let heartbeat = async {
            let mut beats = tokio::time::interval_at(Instant::now() + interval, interval);
            loop {
                beats.tick().await;
                tracing::debug!(
                    messages = receipts.len(),
                    "still processing; extending visibility"
                );
                metrics::record_heartbeat(receipts.len());
                self.queues
                    .change_visibility(receipts, self.visibility)
                    .await;
            }
        };
        tokio::select! {
            result = work => result,
            () = heartbeat => unreachable!("the heartbeat never ends"),
        }
    }

    /// Writes the events: all in one transaction; when that fails for a reason that is not
    /// transient, one by one, so a bad event does not hold back the rest. `Some(new)` per
    /// stored event, `None` per event to retry.
    async fn write(&self, events: &[Envelope]) -> Vec<Option<bool>> {
        match self.write_batch(events).await {
            Ok(new) => new.into_iter().map(Some).collect(),
            Err(error) if is_transient(&error) || events.len() == 1 => {
                tracing::warn!(events = events.len(), %error, "writing failed; the messages will be retried after a back-off");
                vec![None; events.len()]
            }
            Err(error) => {
                tracing::warn!(events = events.len(), %error, "writing the batch failed; writing its events one by one");
                let mut results = Vec::with_capacity(events.len());
                for event in events {
                    match self.write_batch(std::slice::from_ref(event)).await {
                        Ok(new) => results.push(new.first().copied()),
                        Err(error) => {
                            tracing::warn!(event_id = %event.id, source = %event.source, %error, "event could not be written; it will be retried after a back-off");
                            results.push(None);
                        }
                    }
                }
                results
            }
        }
    }

    /// One transaction through the handler.
    async fn write_batch(&self, events: &[Envelope]) -> Result<Vec<bool>, sqlx::Error> {
        let started = Instant::now();
        let mut tx = self.pool.begin().await?;
        let new = self.handler.handle(&mut tx, events).await?;
        if new.len() != events.len() {
            return Err(sqlx::Error::Protocol(format!(
                "the handler answered for {} of {} events",
                new.len(),
                events.len()
            )));
        }
        tx.commit().await?;
        metrics::record_seconds(metrics::DB_WRITE_SECONDS, started.elapsed());
        Ok(new)
    }

    /// Deletes what was stored; hides what failed for its back-off.
    async fn finish(&self, decoded: Vec<Decoded>, results: Vec<Option<bool>>) {
        let mut done = Vec::new();
        let mut retry: Vec<(Duration, Receipt)> = Vec::new();
        for (item, result) in decoded.into_iter().zip(results) {
            match result {
                Some(true) => {
                    let age = (chrono::Utc::now() - item.envelope.received_at)
                        .to_std()
                        .unwrap_or_default();
                    metrics::record_seconds(metrics::END_TO_END_SECONDS, age);
                    metrics::record_outcome(Outcome::Stored);
                    done.push(item.receipt);
                }
                Some(false) => {
                    metrics::record_outcome(Outcome::Duplicate);
                    done.push(item.receipt);
                }
                None => {
                    metrics::record_outcome(Outcome::Retried);
                    retry.push((self.backoff.delay(item.receive_count), item.receipt));
                }
            }
        }
        self.queues.delete(&done).await;
        retry.sort_by_key(|(delay, _)| *delay);
        for group in retry.chunk_by(|a, b| a.0 == b.0) {
            let receipts: Vec<Receipt> = group.iter().map(|(_, receipt)| receipt.clone()).collect();
            self.queues.change_visibility(&receipts, group[0].0).await;
        }
    }
}

fn receipt_of(message: &Message) -> Receipt {
    Receipt {
        message_id: message.message_id().unwrap_or_default().to_owned(),
        handle: message.receipt_handle().unwrap_or_default().to_owned(),
    }
}

fn receive_count_of(message: &Message) -> u32 {
    message
        .attributes()
        .and_then(|attributes| attributes.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .and_then(|count| count.parse().ok())
        .unwrap_or(1)
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
