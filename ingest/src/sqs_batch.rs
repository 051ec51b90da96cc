//! [`SendBatch`] over SQS: one `SendMessageBatch` call per batch, each entry's outcome read
//! from the answer, and failures sorted into those worth retrying and those that are final.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchError;
use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName, SendMessageBatchRequestEntry};
use webhook_shared::metrics::record_sqs_request;
use webhook_shared::sqs::{ATTRIBUTE_EVENT_ID, ATTRIBUTE_SOURCE, is_fifo};

use crate::publisher::{EntryOutcome, OutgoingMessage, SendBatch};

/// Sends batches to one SQS queue. FIFO queues (URL ending `.fifo`) get the message's group
/// and its event id as deduplication id.
#[derive(Debug, Clone)]
pub struct SqsBatchSender {
    client: Client,
    queue_url: String,
    fifo: bool,
}

impl SqsBatchSender {
    /// A sender for `queue_url`.
    pub fn new(client: Client, queue_url: String) -> Self {
        let fifo = is_fifo(&queue_url);
        Self {
            client,
            queue_url,
            fifo,
        }
    }

    fn entry(&self, index: usize, message: &OutgoingMessage) -> SendMessageBatchRequestEntry {
        let mut entry = SendMessageBatchRequestEntry::builder()
            .id(index.to_string())
            .message_body(&message.body)
            .message_attributes(ATTRIBUTE_SOURCE, string_attribute(&message.source))
            .message_attributes(ATTRIBUTE_EVENT_ID, string_attribute(&message.event_id));
        if self.fifo {
            entry = entry
                .message_group_id(&message.group_id)
                .message_deduplication_id(&message.event_id);
        }
        entry
            .build()
            .unwrap_or_else(|error| unreachable!("id and body are set: {error}"))
    }
}

fn string_attribute(value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .unwrap_or_else(|error| unreachable!("data_type is set: {error}"))
}

impl SendBatch for SqsBatchSender {
    async fn send_batch(
        &self,
        messages: &[&OutgoingMessage],
    ) -> Result<Vec<EntryOutcome>, EntryOutcome> {
        let entries = messages
            .iter()
            .enumerate()
            .map(|(index, message)| self.entry(index, message))
            .collect();
        let result = self
            .client
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await;
        record_sqs_request("SendMessageBatch", &result);
        let output = result.map_err(|error| {
            let outcome = call_outcome(&error);
            tracing::warn!(entries = messages.len(), retry = outcome == EntryOutcome::Retry, error = %DisplayErrorContext(&error), "SendMessageBatch failed");
            outcome
        })?;
        let mut outcomes = vec![EntryOutcome::Retry; messages.len()];
        for accepted in output.successful() {
            if let Some(outcome) = accepted
                .id()
                .parse()
                .ok()
                .and_then(|i: usize| outcomes.get_mut(i))
            {
                *outcome = EntryOutcome::Accepted;
            }
        }
        for failed in output.failed() {
            let retry = !failed.sender_fault();
            tracing::warn!(
                code = failed.code(),
                message = failed.message(),
                retry,
                "SendMessageBatch entry failed"
            );
            if let Some(outcome) = failed
                .id()
                .parse()
                .ok()
                .and_then(|i: usize| outcomes.get_mut(i))
            {
                *outcome = if retry {
                    EntryOutcome::Retry
                } else {
                    EntryOutcome::Reject
                };
            }
        }
        Ok(outcomes)
    }

    async fn probe(&self) -> bool {
        let result = self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await;
        record_sqs_request("GetQueueAttributes", &result);
        if let Err(error) = &result {
            tracing::warn!(error = %DisplayErrorContext(error), "queue probe failed");
        }
        result.is_ok()
    }
}

/// Whether a failed call is worth repeating: throttling, server faults, timeouts and
/// connection failures are; a request SQS refused as wrong (no such queue, no permission,
/// bad input) is not.
fn call_outcome(error: &SdkError<SendMessageBatchError>) -> EntryOutcome {
    match error {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let throttled = service.err().is_request_throttled()
                || service.err().is_kms_throttled()
                || matches!(
                    service.err().code(),
                    Some("ThrottlingException" | "RequestThrottled" | "ServiceUnavailable")
                );
            if throttled || status >= 500 {
                EntryOutcome::Retry
            } else {
                EntryOutcome::Reject
            }
        }
        _ => EntryOutcome::Retry,
    }
}
