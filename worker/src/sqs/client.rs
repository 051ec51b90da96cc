//! [`SqsQueue`]: the real [`QueueClient`], one AWS SDK call per method, each counted in
//! `webhook_sqs_requests_total`. `worker run` uses one on the main queue; `worker redrive`
//! one on the DLQ (scanned with short polls) and one on the main queue (the copies' target).

use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{
    BatchResultErrorEntry, ChangeMessageVisibilityBatchRequestEntry,
    DeleteMessageBatchRequestEntry, Message, MessageAttributeValue, MessageSystemAttributeName,
    SendMessageBatchRequestEntry,
};
use webhook_shared::metrics::record_sqs_request;
use webhook_shared::sqs::{MAX_VISIBILITY_TIMEOUT_SECONDS, MAX_WAIT_TIME_SECONDS, is_fifo};

use crate::sqs::{FailedEntry, InboundMessage, QueueClient, QueueError, Receipt};

/// Message attribute a poison message carries into the DLQ, saying why.
pub(crate) const ATTRIBUTE_POISON_REASON: &str = "poison_reason";

/// Group id of a copy sent to a FIFO queue when the original had none.
const FALLBACK_GROUP_ID: &str = "redrive";

/// The main queue and, when known, its dead-letter queue, through the AWS SDK.
#[derive(Debug, Clone)]
pub(crate) struct SqsQueue {
    sqs: Client,
    main_url: String,
    dlq_url: Option<String>,
    wait_seconds: i32,
}

impl SqsQueue {
    /// The queues the worker uses; receives long-poll for SQS's longest wait, 20 s.
    pub(crate) fn new(sqs: Client, main_url: String, dlq_url: Option<String>) -> Self {
        Self {
            sqs,
            main_url,
            dlq_url,
            wait_seconds: MAX_WAIT_TIME_SECONDS,
        }
    }

    /// The same queues, receives waiting at most `wait` (whole seconds, up to 20 s).
    pub(crate) fn with_wait(self, wait: Duration) -> Self {
        Self {
            wait_seconds: seconds(wait).min(MAX_WAIT_TIME_SECONDS),
            ..self
        }
    }
}

impl QueueClient for SqsQueue {
    async fn receive(
        &self,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<InboundMessage>, QueueError> {
        let result = self
            .sqs
            .receive_message()
            .queue_url(&self.main_url)
            .max_number_of_messages(max as i32)
            .wait_time_seconds(self.wait_seconds)
            .visibility_timeout(seconds(visibility))
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::AwsTraceHeader)
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .message_attribute_names("All")
            .send()
            .await;
        record_sqs_request("ReceiveMessage", &result);
        let output = result.map_err(|error| QueueError {
            operation: "ReceiveMessage",
            message: DisplayErrorContext(error).to_string(),
        })?;
        Ok(output
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(inbound)
            .collect())
    }

    async fn delete_batch(&self, receipts: &[Receipt]) -> Result<Vec<FailedEntry>, QueueError> {
        let entries = receipts
            .iter()
            .enumerate()
            .map(|(i, r)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(&r.handle)
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()
            .unwrap_or_else(|error| unreachable!("id and handle are set: {error}"));
        let result = self
            .sqs
            .delete_message_batch()
            .queue_url(&self.main_url)
            .set_entries(Some(entries))
            .send()
            .await;
        record_sqs_request("DeleteMessageBatch", &result);
        result
            .map(|output| failed_entries(output.failed))
            .map_err(|error| QueueError {
                operation: "DeleteMessageBatch",
                message: DisplayErrorContext(error).to_string(),
            })
    }

    async fn change_visibility_batch(
        &self,
        entries: &[(Receipt, Duration)],
    ) -> Result<Vec<FailedEntry>, QueueError> {
        let entries = entries
            .iter()
            .enumerate()
            .map(|(i, (r, visibility))| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(&r.handle)
                    .visibility_timeout(seconds(*visibility))
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()
            .unwrap_or_else(|error| unreachable!("id and handle are set: {error}"));
        let result = self
            .sqs
            .change_message_visibility_batch()
            .queue_url(&self.main_url)
            .set_entries(Some(entries))
            .send()
            .await;
        record_sqs_request("ChangeMessageVisibilityBatch", &result);
        result
            .map(|output| failed_entries(output.failed))
            .map_err(|error| QueueError {
                operation: "ChangeMessageVisibilityBatch",
                message: DisplayErrorContext(error).to_string(),
            })
    }

    async fn send_batch(
        &self,
        messages: &[InboundMessage],
    ) -> Result<Vec<FailedEntry>, QueueError> {
        let fifo = is_fifo(&self.main_url);
        let entries = messages
            .iter()
            .enumerate()
            .map(|(i, message)| {
                let entry = SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(&message.body)
                    .set_message_attributes(Some(message.attributes.clone()));
                let entry = if fifo {
                    entry
                        .message_group_id(message.group_id.as_deref().unwrap_or(FALLBACK_GROUP_ID))
                        .message_deduplication_id(&message.receipt.message_id)
                } else {
                    entry.set_message_group_id(message.group_id.clone())
                };
                entry.build()
            })
            .collect::<Result<Vec<_>, _>>()
            .unwrap_or_else(|error| unreachable!("id and body are set: {error}"));
        let result = self
            .sqs
            .send_message_batch()
            .queue_url(&self.main_url)
            .set_entries(Some(entries))
            .send()
            .await;
        record_sqs_request("SendMessageBatch", &result);
        result
            .map(|output| failed_entries(output.failed))
            .map_err(|error| QueueError {
                operation: "SendMessageBatch",
                message: DisplayErrorContext(error).to_string(),
            })
    }

    async fn send_to_dlq(&self, message: &InboundMessage, reason: &str) -> Result<(), QueueError> {
        let Some(dlq_url) = &self.dlq_url else {
            return Err(QueueError {
                operation: "SendMessage",
                message: "no dead-letter queue is known".to_owned(),
            });
        };
        let mut attributes = message.attributes.clone();
        attributes.insert(
            ATTRIBUTE_POISON_REASON.to_owned(),
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(reason)
                .build()
                .unwrap_or_else(|error| unreachable!("data_type is set: {error}")),
        );
        let mut request = self
            .sqs
            .send_message()
            .queue_url(dlq_url)
            .message_body(&message.body)
            .set_message_attributes(Some(attributes));
        if is_fifo(dlq_url) {
            request = request
                .message_group_id("poison")
                .message_deduplication_id(&message.receipt.message_id);
        }
        let result = request.send().await;
        record_sqs_request("SendMessage", &result);
        result.map(|_| ()).map_err(|error| QueueError {
            operation: "SendMessage",
            message: DisplayErrorContext(error).to_string(),
        })
    }

    fn has_dlq(&self) -> bool {
        self.dlq_url.is_some()
    }
}

fn seconds(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs())
        .unwrap_or(i32::MAX)
        .min(MAX_VISIBILITY_TIMEOUT_SECONDS)
}

fn failed_entries(failed: Vec<BatchResultErrorEntry>) -> Vec<FailedEntry> {
    failed
        .into_iter()
        .filter_map(|entry| {
            Some(FailedEntry {
                index: entry.id().parse().ok()?,
                code: entry.code().to_owned(),
                sender_fault: entry.sender_fault(),
            })
        })
        .collect()
}

fn inbound(message: Message) -> InboundMessage {
    let system = |name: MessageSystemAttributeName| {
        message
            .attributes()
            .and_then(|attributes| attributes.get(&name))
            .and_then(|value| value.parse().ok())
    };
    let sent_ms = system(MessageSystemAttributeName::SentTimestamp);
    let text = |name: MessageSystemAttributeName| {
        message
            .attributes()
            .and_then(|attributes| attributes.get(&name))
            .cloned()
    };
    let trace_header = text(MessageSystemAttributeName::AwsTraceHeader);
    let group_id = text(MessageSystemAttributeName::MessageGroupId);
    let receive_count = system(MessageSystemAttributeName::ApproximateReceiveCount)
        .map_or(1, |count: u64| u32::try_from(count).unwrap_or(u32::MAX));
    InboundMessage {
        receipt: Receipt {
            message_id: message.message_id.unwrap_or_default(),
            handle: message.receipt_handle.unwrap_or_default(),
        },
        body: message.body.unwrap_or_default(),
        sent_ms,
        receive_count,
        attributes: message.message_attributes.unwrap_or_default(),
        trace_header,
        group_id,
    }
}
