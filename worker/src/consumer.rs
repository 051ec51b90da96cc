//! The consumer: long-poll loops that never receive more messages than there are free
//! permits under the concurrency limit, and the per-message work (decode, store, delete).
//!
//! A permit is taken before a message is asked for and is held until the message is done,
//! so at most `WORKER_CONCURRENCY` messages are ever in processing, whatever the backlog.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use sqlx::PgPool;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use webhook_shared::envelope::Envelope;
use webhook_shared::metrics::record_sqs_request;
use webhook_shared::sqs::{MAX_BATCH_ENTRIES, MAX_WAIT_TIME_SECONDS};

use crate::metrics::{self, InFlight, Outcome};
use crate::store::{self, Stored};

/// Longest pause after repeated SQS errors.
const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(20);

/// Receives from one queue and stores what it receives.
#[derive(Debug)]
pub struct Consumer {
    sqs: Client,
    queue_url: String,
    pool: PgPool,
    permits: Arc<Semaphore>,
}

impl Consumer {
    /// A consumer processing at most `concurrency` messages at once.
    pub fn new(sqs: Client, queue_url: String, pool: PgPool, concurrency: u32) -> Self {
        metrics::gauge_concurrency(concurrency);
        Self {
            sqs,
            queue_url,
            pool,
            permits: Arc::new(Semaphore::new(concurrency as usize)),
        }
    }

    /// Runs `loops` receive loops until `shutdown`, then waits at most `grace` for the
    /// messages in processing. What is not finished by then is redelivered by SQS later.
    pub async fn run(self: Arc<Self>, loops: u32, shutdown: CancellationToken, grace: Duration) {
        let tasks = TaskTracker::new();
        let receivers: Vec<_> = (0..loops)
            .map(|_| {
                let this = Arc::clone(&self);
                let (shutdown, tasks) = (shutdown.clone(), tasks.clone());
                tokio::spawn(async move { this.receive_loop(&shutdown, &tasks).await })
            })
            .collect();
        for receiver in receivers {
            if let Err(error) = receiver.await {
                tracing::error!(%error, "receive loop panicked");
            }
        }
        tasks.close();
        tracing::info!(
            in_processing = tasks.len(),
            "stopped receiving; finishing messages in processing"
        );
        if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
            tracing::warn!(
                unfinished = tasks.len(),
                "grace period over; SQS will redeliver what is unfinished"
            );
        }
    }

    async fn receive_loop(self: &Arc<Self>, shutdown: &CancellationToken, tasks: &TaskTracker) {
        let mut consecutive_errors = 0u32;
        loop {
            let Some(Some(mut permits)) = shutdown.run_until_cancelled(self.reserve()).await else {
                return;
            };
            let wanted = permits.num_permits();
            let Some(received) = shutdown.run_until_cancelled(self.receive(wanted)).await else {
                return;
            };
            let messages = match received {
                Ok(messages) => {
                    consecutive_errors = 0;
                    messages
                }
                Err(error) => {
                    consecutive_errors += 1;
                    let pause = error_backoff(consecutive_errors);
                    tracing::warn!(error = %DisplayErrorContext(&error), ?pause, "ReceiveMessage failed");
                    drop(permits);
                    if shutdown
                        .run_until_cancelled(tokio::time::sleep(pause))
                        .await
                        .is_none()
                    {
                        return;
                    }
                    continue;
                }
            };
            record_lag(&messages);
            for message in messages {
                let Some(permit) = permits.split(1) else {
                    tracing::error!("SQS returned more messages than asked for; leaving the rest");
                    break;
                };
                let this = Arc::clone(self);
                tasks.spawn(async move {
                    this.process(message).await;
                    drop(permit);
                });
            }
        }
    }

    /// Waits for one free permit, then takes as many more as are free, up to one receive's
    /// worth. `None` only if the semaphore was closed.
    async fn reserve(&self) -> Option<OwnedSemaphorePermit> {
        let mut permits = Arc::clone(&self.permits).acquire_owned().await.ok()?;
        let more = self.permits.available_permits().min(MAX_BATCH_ENTRIES - 1);
        if more > 0
            && let Ok(extra) = Arc::clone(&self.permits).try_acquire_many_owned(more as u32)
        {
            permits.merge(extra);
        }
        Some(permits)
    }

    async fn receive(
        &self,
        max: usize,
    ) -> Result<
        Vec<Message>,
        aws_sdk_sqs::error::SdkError<aws_sdk_sqs::operation::receive_message::ReceiveMessageError>,
    > {
        let result = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max as i32)
            .wait_time_seconds(MAX_WAIT_TIME_SECONDS)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_attribute_names("All")
            .send()
            .await;
        record_sqs_request("ReceiveMessage", &result);
        result.map(|output| output.messages.unwrap_or_default())
    }

    /// Decodes, stores and deletes one message. A message is deleted only after its row is
    /// committed; anything else leaves it on the queue for SQS to deliver again.
    async fn process(&self, message: Message) {
        let _in_flight = InFlight::start();
        let message_id = message.message_id().unwrap_or_default();
        let envelope = match Envelope::from_json(message.body().unwrap_or_default()) {
            Ok(envelope) => envelope,
            Err(error) => {
                metrics::record_outcome(Outcome::Poison);
                tracing::warn!(message_id, %error, "poison message: not a readable envelope; leaving it for the DLQ");
                return;
            }
        };
        let started = Instant::now();
        let stored = store::insert_event(&self.pool, &envelope).await;
        metrics::record_seconds(metrics::DB_WRITE_SECONDS, started.elapsed());
        let outcome = match stored {
            Ok(Stored::Inserted) => {
                let end_to_end = (chrono::Utc::now() - envelope.received_at)
                    .to_std()
                    .unwrap_or_default();
                metrics::record_seconds(metrics::END_TO_END_SECONDS, end_to_end);
                Outcome::Stored
            }
            Ok(Stored::Duplicate) => Outcome::Duplicate,
            Err(error) => {
                metrics::record_outcome(Outcome::Retried);
                tracing::warn!(message_id, event_id = %envelope.id, %error, "storing failed; SQS will deliver the message again");
                return;
            }
        };
        metrics::record_outcome(outcome);
        if let Some(receipt_handle) = message.receipt_handle() {
            self.delete(message_id, receipt_handle).await;
        }
    }

    async fn delete(&self, message_id: &str, receipt_handle: &str) {
        let result = self
            .sqs
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .send()
            .await;
        record_sqs_request("DeleteMessage", &result);
        if let Err(error) = result {
            // The row is committed, so a redelivery only finds a duplicate.
            tracing::warn!(message_id, error = %DisplayErrorContext(&error), "DeleteMessage failed; the message will come back as a duplicate");
        }
    }
}

/// Sets the lag gauge from one receive: the oldest message's age, or 0 when none came.
fn record_lag(messages: &[Message]) {
    let now = SystemTime::now();
    let ages = messages.iter().filter_map(|message| {
        let sent_ms: u64 = message
            .attributes()?
            .get(&MessageSystemAttributeName::SentTimestamp)?
            .parse()
            .ok()?;
        let sent = SystemTime::UNIX_EPOCH + Duration::from_millis(sent_ms);
        Some(now.duration_since(sent).unwrap_or_default())
    });
    let mut oldest = Duration::ZERO;
    for age in ages {
        metrics::record_seconds(metrics::MESSAGE_AGE_SECONDS, age);
        oldest = oldest.max(age);
    }
    ::metrics::gauge!(metrics::LAG_SECONDS).set(oldest.as_secs_f64());
}

/// 100 ms doubling per consecutive error, capped.
fn error_backoff(consecutive_errors: u32) -> Duration {
    let exponent = consecutive_errors.saturating_sub(1).min(10);
    (Duration::from_millis(100) * 2u32.pow(exponent)).min(MAX_ERROR_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(error_backoff(1), Duration::from_millis(100));
        assert_eq!(error_backoff(2), Duration::from_millis(200));
        assert_eq!(error_backoff(5), Duration::from_millis(1600));
        assert_eq!(error_backoff(50), MAX_ERROR_BACKOFF);
    }
}
