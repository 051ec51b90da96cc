//! The receive loops: each waits for room under the concurrency limit, asks SQS for no more
//! messages than it holds permits for (at most 10), and hands what it receives to a
//! processing task that keeps those permits until the messages are done. So at most
//! `WORKER_CONCURRENCY` messages are ever in processing, whatever the backlog.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{DisplayErrorContext, SdkError};
use aws_sdk_sqs::operation::receive_message::ReceiveMessageError;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use webhook_shared::metrics::record_sqs_request;
use webhook_shared::sqs::{MAX_BATCH_ENTRIES, MAX_WAIT_TIME_SECONDS};

use crate::handler::Handler;
use crate::lag::Lag;
use crate::limit::ConcurrencyLimit;
use crate::process::Processor;
use crate::queue::{Queues, Receipt};

/// Longest pause after repeated SQS errors.
const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(20);

/// Receives from the main queue and processes what it receives.
#[derive(Debug)]
pub struct Consumer<H> {
    sqs: Client,
    queue_url: String,
    queues: Queues,
    limit: Arc<ConcurrencyLimit>,
    rate: Option<DefaultDirectRateLimiter>,
    processor: Arc<Processor<H>>,
    lag: Arc<Lag>,
}

impl<H: Handler> Consumer<H> {
    /// A consumer under `limit`, receiving at most `per_second` messages a second if given.
    pub fn new(
        sqs: Client,
        queue_url: String,
        queues: Queues,
        limit: Arc<ConcurrencyLimit>,
        per_second: Option<NonZeroU32>,
        processor: Processor<H>,
        lag: Arc<Lag>,
    ) -> Self {
        let rate = per_second.map(|n| RateLimiter::direct(Quota::per_second(n)));
        Self {
            sqs,
            queue_url,
            queues,
            limit,
            rate,
            processor: Arc::new(processor),
            lag,
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
            batches_in_processing = tasks.len(),
            "stopped receiving; finishing messages in processing"
        );
        if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
            tracing::warn!(
                unfinished = tasks.len(),
                "grace period over; SQS will redeliver what is unfinished"
            );
        }
    }

    async fn receive_loop(&self, shutdown: &CancellationToken, tasks: &TaskTracker) {
        let mut consecutive_errors = 0u32;
        loop {
            let Some(mut permits) = shutdown
                .run_until_cancelled(self.limit.reserve(MAX_BATCH_ENTRIES))
                .await
            else {
                return;
            };
            let wanted = permits.num_permits();
            if let Some(rate) = &self.rate {
                let cells = NonZeroU32::new(wanted as u32).unwrap_or(NonZeroU32::MIN);
                if shutdown
                    .run_until_cancelled(rate.until_n_ready(cells))
                    .await
                    .is_none()
                {
                    return;
                }
            }
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
            self.lag.observe_receive(&messages);
            if messages.is_empty() {
                continue;
            }
            if shutdown.is_cancelled() {
                // Received as shutdown began: give them back at once rather than start them.
                let receipts: Vec<Receipt> = messages
                    .iter()
                    .map(|m| Receipt {
                        message_id: m.message_id().unwrap_or_default().to_owned(),
                        handle: m.receipt_handle().unwrap_or_default().to_owned(),
                    })
                    .collect();
                self.queues
                    .change_visibility(&receipts, Duration::ZERO)
                    .await;
                return;
            }
            let held = permits.split(messages.len()).unwrap_or(permits);
            let processor = Arc::clone(&self.processor);
            tasks.spawn(async move {
                processor.process(messages).await;
                drop(held);
            });
        }
    }

    async fn receive(&self, max: usize) -> Result<Vec<Message>, SdkError<ReceiveMessageError>> {
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
