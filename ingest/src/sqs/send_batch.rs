//! [`SendBatch`] over SQS: one `SendMessageBatch` call per batch, each entry's outcome read
//! from the answer, and failures sorted into those worth retrying and those that are final.
//! A call SQS refuses whole for something one entry can cause is split: each entry is sent
//! again in a call of its own, so only the entry at fault is refused.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::operation::send_message_batch::{SendMessageBatchError, SendMessageBatchOutput};
use aws_sdk_sqs::types::{
    MessageAttributeValue, MessageSystemAttributeNameForSends, MessageSystemAttributeValue,
    QueueAttributeName, SendMessageBatchRequestEntry,
};
use opentelemetry::trace::Span as _;
use sha2::{Digest as _, Sha256};
use webhook_shared::metrics::record_sqs_request;
use webhook_shared::sqs::is_fifo;
use webhook_shared::telemetry::messaging;

use crate::metrics;
use crate::sqs::publisher::{Attribute, EntryOutcome, OutgoingMessage, SendBatch};
use crate::sqs::spans::Spans;

/// Longest `MessageDeduplicationId` SQS accepts, in characters.
const MAX_DEDUPLICATION_ID_CHARS: usize = 128;

/// Sends batches to one SQS queue. FIFO queues (URL ending `.fifo`) get the message's group
/// and a deduplication id made from its event id (see [`deduplication_id`]); standard queues
/// get the group only as fair queues (`FAIR_QUEUE_GROUPS`).
#[derive(Debug, Clone)]
pub(crate) struct SqsBatchSender {
    client: Client,
    queue_url: String,
    fifo: bool,
    fair_groups: bool,
    spans: Option<Spans>,
}

impl SqsBatchSender {
    /// A sender for `queue_url`; `fair_groups`: send the group to a standard queue too;
    /// `spans`: a `send` span per call, when tracing is on.
    pub(crate) fn new(
        client: Client,
        queue_url: String,
        fair_groups: bool,
        spans: Option<Spans>,
    ) -> Self {
        let fifo = is_fifo(&queue_url);
        Self {
            client,
            queue_url,
            fifo,
            fair_groups,
            spans,
        }
    }

    fn entry(&self, index: usize, message: &OutgoingMessage) -> SendMessageBatchRequestEntry {
        let mut entry = SendMessageBatchRequestEntry::builder()
            .id(index.to_string())
            .message_body(&message.body);
        for attribute in message.attributes() {
            entry = entry.message_attributes(attribute.name, attribute_value(attribute));
        }
        if let Some(xray) = message.trace.as_ref().and_then(|trace| trace.xray.as_ref()) {
            // A system attribute: X-Ray reads it, and it does not count toward the size.
            entry = entry.message_system_attributes(
                MessageSystemAttributeNameForSends::AwsTraceHeader,
                system_string(xray),
            );
        }
        if self.fifo {
            entry = entry
                .message_group_id(&message.group_id)
                .message_deduplication_id(deduplication_id(&message.source, &message.event_id));
        } else if self.fair_groups {
            // No deduplication id: a standard queue refuses one.
            entry = entry.message_group_id(&message.group_id);
        }
        entry
            .build()
            .unwrap_or_else(|error| unreachable!("id and body are set: {error}"))
    }

    /// One `SendMessageBatch` call with the messages as entries `0`, `1`, ...
    async fn call(
        &self,
        messages: &[&OutgoingMessage],
    ) -> Result<SendMessageBatchOutput, SdkError<SendMessageBatchError>> {
        let entries = messages
            .iter()
            .enumerate()
            .map(|(index, message)| self.entry(index, message))
            .collect();
        let mut span = self.spans.as_ref().map(|spans| spans.send(messages));
        let result = self
            .client
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await;
        if let Some(span) = &mut span {
            match &result {
                Err(error) => messaging::fail(span, sqs_error_type(error)),
                Ok(output) if !output.failed().is_empty() => {
                    messaging::fail(span, "entries_failed");
                }
                Ok(_) => {}
            }
            span.end();
        }
        record_sqs_request("SendMessageBatch", &result);
        crate::metrics::gauge_queue_reachable(result.is_ok());
        result
    }

    /// Sends each message in a call of its own, one after the other (so a FIFO group keeps
    /// its order), and returns each one's outcome.
    async fn send_one_by_one(&self, messages: &[&OutgoingMessage]) -> Vec<EntryOutcome> {
        let mut outcomes = Vec::with_capacity(messages.len());
        for message in messages {
            let outcome = match self.call(std::slice::from_ref(message)).await {
                Ok(output) => entry_outcomes(&output, 1)[0],
                Err(error) => {
                    let outcome = call_outcome(&error);
                    tracing::warn!(
                        retry = outcome == EntryOutcome::Retry,
                        error = %DisplayErrorContext(&error),
                        "SendMessageBatch of one entry failed"
                    );
                    outcome
                }
            };
            outcomes.push(outcome);
        }
        outcomes
    }
}

/// The attribute as the SDK sends it.
fn attribute_value(attribute: Attribute<'_>) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type(attribute.data_type)
        .string_value(attribute.value)
        .build()
        .unwrap_or_else(|error| unreachable!("data_type is set: {error}"))
}

/// A `String` system attribute.
fn system_string(value: &str) -> MessageSystemAttributeValue {
    MessageSystemAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .unwrap_or_else(|error| unreachable!("data_type is set: {error}"))
}

/// `error.type` of a failed call: SQS's error code, else the kind of failure (`timeout`,
/// `dispatch_failure`, ...), all bounded.
fn sqs_error_type(error: &SdkError<SendMessageBatchError>) -> String {
    match error {
        SdkError::ServiceError(service) => {
            service.err().code().unwrap_or("service_error").to_owned()
        }
        SdkError::TimeoutError(_) => "timeout".to_owned(),
        SdkError::DispatchFailure(_) => "dispatch_failure".to_owned(),
        SdkError::ResponseError(_) => "response_error".to_owned(),
        _ => "_OTHER".to_owned(),
    }
}

/// The FIFO deduplication id of an event: `{source}/{event id}` when SQS takes its length (at
/// most 128 characters; sources and event ids are visible ASCII, all of which SQS takes),
/// else `sha256:` and the hex SHA-256 of the source, a zero byte and the id (71 characters);
/// the same for every retry of the event. The source is part of it because rows are keyed by
/// `(source, id)`: two sources may send the same id, and SQS deduplicates across the queue.
fn deduplication_id(source: &str, event_id: &str) -> String {
    let plain = format!("{source}/{event_id}");
    if plain.len() <= MAX_DEDUPLICATION_ID_CHARS {
        return plain;
    }
    let mut hash = Sha256::new();
    hash.update(source.as_bytes());
    hash.update([0]);
    hash.update(event_id.as_bytes());
    format!("sha256:{}", hex::encode(hash.finalize()))
}

/// Each of `entries` entries' outcome from SQS's answer; an entry the answer does not
/// mention is retried.
fn entry_outcomes(output: &SendMessageBatchOutput, entries: usize) -> Vec<EntryOutcome> {
    let mut outcomes = vec![EntryOutcome::Retry; entries];
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
    outcomes
}

impl SendBatch for SqsBatchSender {
    async fn send_batch(
        &self,
        messages: &[&OutgoingMessage],
    ) -> Result<Vec<EntryOutcome>, EntryOutcome> {
        let error = match self.call(messages).await {
            Ok(output) => return Ok(entry_outcomes(&output, messages.len())),
            Err(error) => error,
        };
        let outcome = call_outcome(&error);
        let split =
            outcome == EntryOutcome::Reject && messages.len() > 1 && may_be_one_entry(&error);
        tracing::warn!(
            entries = messages.len(),
            retry = outcome == EntryOutcome::Retry,
            split,
            error = %DisplayErrorContext(&error),
            "SendMessageBatch failed"
        );
        if !split {
            return Err(outcome);
        }
        metrics::record_batch_split();
        Ok(self.send_one_by_one(messages).await)
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
        crate::metrics::gauge_queue_reachable(result.is_ok());
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

/// Whether SQS refused the whole call for something a single entry can cause (the size, the
/// characters or an attribute of one message, a FIFO id), rather than for the queue or the
/// caller (no such queue, no permission, KMS), where sending each entry alone cannot help.
fn may_be_one_entry(error: &SdkError<SendMessageBatchError>) -> bool {
    let SdkError::ServiceError(service) = error else {
        return false;
    };
    if service.err().is_batch_request_too_long() {
        return true;
    }
    let Some(code) = service.err().code() else {
        return false;
    };
    // Codes come as `InvalidParameterValue`, `AWS.SimpleQueueService.BatchRequestTooLong`
    // or, from some emulators, with an `Exception` suffix.
    let code = code.strip_prefix("AWS.SimpleQueueService.").unwrap_or(code);
    let code = code.strip_suffix("Exception").unwrap_or(code);
    matches!(
        code,
        "BatchRequestTooLong"
            | "InvalidParameterValue"
            | "InvalidMessageContents"
            | "MessageTooLong"
            | "InvalidAttributeName"
            | "InvalidAttributeValue"
            | "MissingParameter"
            | "Validation"
            | "ValidationError"
    )
}

#[cfg(test)]
#[path = "send_batch_tests.rs"]
mod tests;
