//! The SQS operations of the worker beyond receiving: deleting stored messages, changing
//! visibility (back-off and heartbeat), and moving poison messages straight to the DLQ.
//! Batch calls check every entry: failed entries are retried, then logged, never ignored.

use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{
    BatchResultErrorEntry, ChangeMessageVisibilityBatchRequestEntry,
    DeleteMessageBatchRequestEntry, Message, MessageAttributeValue,
};
use webhook_shared::metrics::record_sqs_request;

/// Attempts per batch entry before a failure is logged and left to SQS.
const ENTRY_ATTEMPTS: u32 = 3;
/// Pause between attempts.
const ENTRY_RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Message attribute a poison message carries into the DLQ, saying why.
const ATTRIBUTE_POISON_REASON: &str = "poison_reason";

/// The main queue and, when known, its dead-letter queue.
#[derive(Debug, Clone)]
pub struct Queues {
    sqs: Client,
    main_url: String,
    dlq_url: Option<String>,
}

/// One message's handle for batch calls, with the visibility to set where that applies.
#[derive(Debug, Clone)]
pub struct Receipt {
    /// The SQS message id (for logs).
    pub message_id: String,
    /// The receipt handle from the receive.
    pub handle: String,
}

impl Queues {
    /// The queues the worker uses.
    pub fn new(sqs: Client, main_url: String, dlq_url: Option<String>) -> Self {
        Self {
            sqs,
            main_url,
            dlq_url,
        }
    }

    /// Deletes messages from the main queue (ten per call), retrying failed entries.
    pub async fn delete(&self, receipts: &[Receipt]) {
        for chunk in receipts.chunks(10) {
            self.with_entry_retries("DeleteMessageBatch", chunk, |pending| async move {
                let entries = pending
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
                    .map(|output| output.failed)
                    .map_err(|error| DisplayErrorContext(error).to_string())
            })
            .await;
        }
    }

    /// Sets the visibility timeout of messages (ten per call), retrying failed entries.
    pub async fn change_visibility(&self, receipts: &[Receipt], visibility: Duration) {
        let seconds = i32::try_from(visibility.as_secs())
            .unwrap_or(i32::MAX)
            .min(webhook_shared::sqs::MAX_VISIBILITY_TIMEOUT_SECONDS);
        for chunk in receipts.chunks(10) {
            self.with_entry_retries(
                "ChangeMessageVisibilityBatch",
                chunk,
                |pending| async move {
                    let entries = pending
                        .iter()
                        .enumerate()
                        .map(|(i, r)| {
                            ChangeMessageVisibilityBatchRequestEntry::builder()
                                .id(i.to_string())
                                .receipt_handle(&r.handle)
                                .visibility_timeout(seconds)
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
                        .map(|output| output.failed)
                        .map_err(|error| DisplayErrorContext(error).to_string())
                },
            )
            .await;
        }
    }

    /// Moves a poison message to the DLQ at once (with its attributes and the reason), then
    /// deletes it from the main queue, so it burns no retries and blocks nothing. Without a
    /// known DLQ it is left for SQS's own redrive.
    pub async fn move_to_dlq(&self, message: &Message, reason: &str) {
        let Some(dlq_url) = &self.dlq_url else {
            tracing::error!(
                message_id = message.message_id(),
                "no dead-letter queue known (set DLQ_URL or a RedrivePolicy); leaving the poison message to SQS"
            );
            return;
        };
        let mut reason = reason.to_owned();
        reason.truncate(256);
        let mut attributes = message.message_attributes().cloned().unwrap_or_default();
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
            .message_body(message.body().unwrap_or_default())
            .set_message_attributes(Some(attributes));
        if webhook_shared::sqs::is_fifo(dlq_url) {
            let id = message.message_id().unwrap_or_default();
            request = request
                .message_group_id("poison")
                .message_deduplication_id(id);
        }
        let result = request.send().await;
        record_sqs_request("SendMessage", &result);
        match result {
            Ok(_) => {
                let receipt = Receipt {
                    message_id: message.message_id().unwrap_or_default().to_owned(),
                    handle: message.receipt_handle().unwrap_or_default().to_owned(),
                };
                self.delete(&[receipt]).await;
            }
            Err(error) => tracing::warn!(
                message_id = message.message_id(),
                error = %DisplayErrorContext(&error),
                "moving a poison message to the DLQ failed; SQS will deliver it again"
            ),
        }
    }

    /// Runs a batch call, sending the failed entries again up to [`ENTRY_ATTEMPTS`] times.
    async fn with_entry_retries<'r, F, Fut>(
        &self,
        operation: &'static str,
        receipts: &'r [Receipt],
        call: F,
    ) where
        F: Fn(Vec<&'r Receipt>) -> Fut,
        Fut: Future<Output = Result<Vec<BatchResultErrorEntry>, String>>,
    {
        let mut pending: Vec<&Receipt> = receipts.iter().collect();
        for attempt in 1..=ENTRY_ATTEMPTS {
            let failed = match call(pending.clone()).await {
                Ok(failed) => failed,
                Err(error) => {
                    tracing::warn!(operation, attempt, entries = pending.len(), %error, "SQS batch call failed");
                    tokio::time::sleep(ENTRY_RETRY_PAUSE).await;
                    continue;
                }
            };
            let mut retry = Vec::new();
            for entry in &failed {
                let receipt = entry
                    .id()
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| pending.get(i));
                let message_id = receipt.map_or("?", |r| r.message_id.as_str());
                tracing::warn!(
                    operation,
                    attempt,
                    message_id,
                    code = entry.code(),
                    message = entry.message(),
                    "SQS batch entry failed"
                );
                if !entry.sender_fault()
                    && let Some(receipt) = receipt
                {
                    retry.push(*receipt);
                }
            }
            if retry.is_empty() {
                return;
            }
            pending = retry;
            tokio::time::sleep(ENTRY_RETRY_PAUSE).await;
        }
        tracing::error!(
            operation,
            entries = pending.len(),
            "giving up on SQS batch entries; the messages will be delivered again"
        );
    }
}
