//! Putting envelopes on SQS. [`Publish`] is the seam: handlers depend on it, the SQS
//! implementation sends, and unit tests put a small fake behind it.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::MessageAttributeValue;
use webhook_shared::envelope::Envelope;
use webhook_shared::metrics::record_sqs_request;
use webhook_shared::sqs::{ATTRIBUTE_EVENT_ID, ATTRIBUTE_SOURCE, is_fifo};

/// The queue did not accept the message. The cause has been logged.
#[derive(Debug, thiserror::Error)]
#[error("the queue did not accept the message")]
pub struct PublishError;

/// Something that durably enqueues envelopes. `Ok` means the queue has the message.
pub trait Publish: Send + Sync + 'static {
    /// Enqueues one envelope, given with its serialized form.
    fn publish(
        &self,
        envelope: &Envelope,
        body: String,
    ) -> impl Future<Output = Result<(), PublishError>> + Send;

    /// Whether the queue answers at all (for `/readyz`).
    fn probe(&self) -> impl Future<Output = bool> + Send;
}

/// Publishes to one SQS queue.
#[derive(Debug, Clone)]
pub struct SqsPublisher {
    client: Client,
    queue_url: String,
    fifo: bool,
}

impl SqsPublisher {
    /// A publisher for `queue_url`.
    pub fn new(client: Client, queue_url: String) -> Self {
        let fifo = is_fifo(&queue_url);
        Self {
            client,
            queue_url,
            fifo,
        }
    }
}

fn string_attribute(value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .unwrap_or_else(|error| unreachable!("data_type is set: {error}"))
}

impl Publish for SqsPublisher {
    async fn publish(&self, envelope: &Envelope, body: String) -> Result<(), PublishError> {
        let mut request = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .message_attributes(ATTRIBUTE_SOURCE, string_attribute(&envelope.source))
            .message_attributes(ATTRIBUTE_EVENT_ID, string_attribute(&envelope.id));
        if self.fifo {
            request = request
                .message_group_id(&envelope.source)
                .message_deduplication_id(&envelope.id);
        }
        let result = request.send().await;
        record_sqs_request("SendMessage", &result);
        result.map(drop).map_err(|error| {
            tracing::warn!(event_id = %envelope.id, error = %DisplayErrorContext(&error), "SendMessage failed");
            PublishError
        })
    }

    async fn probe(&self) -> bool {
        let result = self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await;
        record_sqs_request("GetQueueAttributes", &result);
        if let Err(error) = &result {
            tracing::warn!(error = %DisplayErrorContext(error), "queue probe failed");
        }
        result.is_ok()
    }
}
