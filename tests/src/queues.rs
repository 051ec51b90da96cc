//! The test's queues: creating them, putting messages on them, and reading them back.

use std::time::Duration;

use anyhow::Context as _;
use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use webhook_shared::envelope::Envelope;

use crate::{QueueOptions, TestStack};

/// Where LocalStack listens unless `AWS_ENDPOINT_URL` says otherwise.
const DEFAULT_SQS_ENDPOINT: &str = "http://127.0.0.1:4566";

impl TestStack {
    /// Empties the main queue and waits until it reports no messages (a purge refused because
    /// another one is in progress is fine: the wait still checks the result).
    pub async fn purge(&self) {
        let _ = self
            .sqs
            .purge_queue()
            .queue_url(&self.queue_url)
            .send()
            .await;
        self.wait_for_empty(&self.queue_url, Duration::from_secs(30))
            .await;
    }

    /// Envelopes for `source` with small JSON bodies, as ingest would write them.
    pub fn envelopes(source: &str, count: usize) -> Vec<Envelope> {
        (0..count)
            .map(|n| Envelope {
                id: uuid::Uuid::now_v7().to_string(),
                source: source.to_owned(),
                received_at: chrono::Utc::now(),
                headers: std::collections::BTreeMap::from([(
                    "content-type".to_owned(),
                    "application/json".to_owned(),
                )]),
                content_type: Some("application/json".to_owned()),
                body: bytes::Bytes::from(format!(r#"{{"n":{n}}}"#)),
            })
            .collect()
    }

    /// A queue URL in the same account and region with another name.
    pub fn sibling_queue_url(&self, name: &str) -> String {
        let (base, _) = self
            .queue_url
            .rsplit_once('/')
            .expect("queue URLs have a path");
        format!("{base}/{name}")
    }

    /// Visible plus in-flight messages in a queue, from GetQueueAttributes.
    pub async fn messages_in(&self, queue_url: &str) -> u64 {
        let output = self
            .sqs
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .expect("GetQueueAttributes");
        output
            .attributes()
            .into_iter()
            .flat_map(|attributes| attributes.values())
            .map(|count| count.parse::<u64>().expect("counts are numbers"))
            .sum()
    }

    /// Waits until a queue holds no messages at all; panics after `timeout`.
    pub async fn wait_for_empty(&self, queue_url: &str, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = self.messages_in(queue_url).await;
            if left == 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{left} messages still in {queue_url} after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Puts `count` envelopes on the main queue directly (as ingest would), ten per
    /// SendMessageBatch call, and returns their event ids. Bodies are small JSON documents
    /// from source `preload`.
    pub async fn preload(&self, count: usize) -> Vec<String> {
        let envelopes = Self::envelopes("preload", count);
        self.send_raw(
            &self.queue_url,
            envelopes.iter().map(Envelope::to_json).collect(),
        )
        .await;
        envelopes.into_iter().map(|envelope| envelope.id).collect()
    }

    /// Sends message bodies as they are (envelopes or not) to `queue_url`, ten per call, in
    /// parallel batches.
    pub async fn send_raw(&self, queue_url: &str, bodies: Vec<String>) {
        let mut calls = tokio::task::JoinSet::new();
        for chunk in bodies.chunks(10) {
            let entries: Vec<SendMessageBatchRequestEntry> = chunk
                .iter()
                .enumerate()
                .map(|(i, body)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body)
                        .build()
                        .expect("id and body set")
                })
                .collect();
            let (sqs, url) = (self.sqs.clone(), queue_url.to_owned());
            calls.spawn(async move {
                let output = sqs
                    .send_message_batch()
                    .queue_url(url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .expect("SendMessageBatch");
                assert!(
                    output.failed().is_empty(),
                    "failed entries: {:?}",
                    output.failed()
                );
            });
            if calls.len() >= 16 {
                calls.join_next().await;
            }
        }
        calls.join_all().await;
    }

    /// Receives every message now in `queue_url` (hiding each for the visibility timeout)
    /// and returns their bodies; stops after two empty receives in a row.
    pub async fn receive_all(&self, queue_url: &str) -> Vec<String> {
        let mut bodies = Vec::new();
        let mut empty = 0;
        while empty < 2 {
            let output = self
                .sqs
                .receive_message()
                .queue_url(queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .expect("ReceiveMessage");
            let messages = output.messages.unwrap_or_default();
            empty = if messages.is_empty() { empty + 1 } else { 0 };
            bodies.extend(messages.into_iter().filter_map(|message| message.body));
        }
        bodies
    }

    /// The event ids of every message now in `queue_url` (see [`TestStack::receive_all`]).
    pub async fn event_ids_in(&self, queue_url: &str) -> Vec<String> {
        self.receive_all(queue_url)
            .await
            .iter()
            .map(|body| {
                let envelope: serde_json::Value =
                    serde_json::from_str(body).expect("messages are envelopes");
                envelope["id"]
                    .as_str()
                    .expect("envelopes have ids")
                    .to_owned()
            })
            .collect()
    }
}

/// LocalStack's endpoint (SQS and S3): `AWS_ENDPOINT_URL`, or `http://127.0.0.1:4566`.
pub fn sqs_endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| DEFAULT_SQS_ENDPOINT.to_owned())
}

/// The AWS settings of every LocalStack client (SQS and S3): [`sqs_endpoint`], us-east-1 and
/// dummy credentials.
pub(crate) async fn localstack_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(sqs_endpoint())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "test", "test", None, None, "e2e",
        ))
        .load()
        .await
}

pub(crate) async fn sqs_client() -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&localstack_config().await)
}

pub(crate) async fn create_queues(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    options: QueueOptions,
) -> anyhow::Result<(String, String)> {
    let suffix = if options.fifo { ".fifo" } else { "" };
    let fifo =
        |request: aws_sdk_sqs::operation::create_queue::builders::CreateQueueFluentBuilder| {
            if options.fifo {
                request.attributes(QueueAttributeName::FifoQueue, "true")
            } else {
                request
            }
        };
    let dlq_url = fifo(sqs.create_queue().queue_name(format!("{name}-dlq{suffix}")))
        .send()
        .await
        .context("CreateQueue (DLQ)")?
        .queue_url
        .context("no DLQ URL")?;
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .context("GetQueueAttributes (DLQ)")?
        .attributes
        .and_then(|mut attributes| attributes.remove(&QueueAttributeName::QueueArn))
        .context("no DLQ ARN")?;
    let policy = serde_json::json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": options.max_receive_count });
    let queue_url = fifo(sqs.create_queue().queue_name(format!("{name}{suffix}")))
        .attributes(QueueAttributeName::RedrivePolicy, policy.to_string())
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            options.visibility_timeout.to_string(),
        )
        .send()
        .await
        .context("CreateQueue (main)")?
        .queue_url
        .context("no queue URL")?;
    Ok((queue_url, dlq_url))
}
