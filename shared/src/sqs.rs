//! SQS client construction from the standard AWS environment (`AWS_ENDPOINT_URL`,
//! `AWS_REGION`, the default credentials chain), and the service limits the code relies on.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;

/// Most entries in one `SendMessageBatch` / `DeleteMessageBatch` / `ReceiveMessage` (SQS quota).
pub const MAX_BATCH_ENTRIES: usize = 10;
/// Largest message body, and largest total payload of one batch call: 1 MiB (SQS quota).
pub const MAX_MESSAGE_BYTES: usize = 1_048_576;
/// Longest long-poll wait SQS allows for `ReceiveMessage`, in seconds.
pub const MAX_WAIT_TIME_SECONDS: i32 = 20;
/// Longest visibility timeout SQS allows: 12 hours, in seconds.
pub const MAX_VISIBILITY_TIMEOUT_SECONDS: i32 = 43_200;

/// Message attribute carrying the webhook's source.
pub const ATTRIBUTE_SOURCE: &str = "source";
/// Message attribute carrying the event id.
pub const ATTRIBUTE_EVENT_ID: &str = "event_id";

/// How patient a client is with SQS (or S3).
#[derive(Debug, Clone, Copy)]
pub struct ClientTimeouts {
    /// Time allowed for one HTTP attempt. Must exceed the long-poll wait for receivers.
    pub attempt: Duration,
    /// Attempts per operation, first one included (the SDK retries with jittered backoff).
    pub max_attempts: u32,
}

/// Builds an SQS client from the standard AWS environment.
pub async fn client(timeouts: ClientTimeouts) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&sdk_config(timeouts).await)
}

/// The AWS SDK configuration from the standard environment (endpoint, region, credentials),
/// with a 3 s connect timeout and `timeouts` per attempt and operation.
pub async fn sdk_config(timeouts: ClientTimeouts) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(timeouts.attempt)
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(timeouts.max_attempts))
        .load()
        .await
}

/// The queue's name: the last segment of its URL.
pub fn queue_name(queue_url: &str) -> &str {
    queue_url.rsplit('/').next().unwrap_or(queue_url)
}

/// Whether the queue is FIFO (its name ends in `.fifo`).
pub fn is_fifo(queue_url: &str) -> bool {
    queue_name(queue_url).ends_with(".fifo")
}
