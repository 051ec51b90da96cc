//! The worker's seam to SQS's queue administration, beside [`QueueClient`](crate::sqs::QueueClient)
//! for messages: [`QueueAdmin`] reads queue attributes (depths, visibility, redrive policy,
//! ARN), finds a queue's URL, and starts, lists and cancels message moves (`worker redrive`).
//! [`SqsAdmin`] is the real one, each call counted in `webhook_sqs_requests_total`; unit
//! tests put a fake behind the trait.

use std::collections::HashMap;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::QueueAttributeName;
use webhook_shared::metrics::record_sqs_request;

/// A failed administration call: which operation, and SQS's (or the network's) account of it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation} failed: {detail}")]
pub(crate) struct AdminError {
    /// The SQS operation.
    pub(crate) operation: &'static str,
    /// The error with its causes.
    pub(crate) detail: String,
}

/// A queue's attributes, by name.
pub(crate) type Attributes = HashMap<QueueAttributeName, String>;

/// One message move task, as ListMessageMoveTasks reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MoveTask {
    /// The task's handle (only a running task has one).
    pub(crate) handle: Option<String>,
    /// RUNNING, COMPLETED, CANCELLING, CANCELLED or FAILED.
    pub(crate) status: String,
    /// Messages moved so far.
    pub(crate) moved: i64,
    /// Messages to move, when known.
    pub(crate) total: Option<i64>,
    /// Why a failed task failed.
    pub(crate) failure_reason: Option<String>,
    /// When the task started, milliseconds since the epoch.
    pub(crate) started_ms: Option<i64>,
}

/// The queue administration calls the worker makes.
pub(crate) trait QueueAdmin: Send + Sync + 'static {
    /// Reads `names` of the queue at `url`.
    fn attributes(
        &self,
        url: &str,
        names: &[QueueAttributeName],
    ) -> impl Future<Output = Result<Attributes, AdminError>> + Send;

    /// The URL of the queue `name` owned by `account`.
    fn queue_url(
        &self,
        account: &str,
        name: &str,
    ) -> impl Future<Output = Result<String, AdminError>> + Send;

    /// Starts moving the messages of `source_arn` to `destination_arn`; returns the task's
    /// handle.
    fn start_move(
        &self,
        source_arn: &str,
        destination_arn: &str,
        per_second: Option<i32>,
    ) -> impl Future<Output = Result<String, AdminError>> + Send;

    /// The move tasks of `source_arn`, newest first.
    fn list_moves(
        &self,
        source_arn: &str,
    ) -> impl Future<Output = Result<Vec<MoveTask>, AdminError>> + Send;

    /// Cancels the running move task `handle`; returns about how many messages it had moved.
    fn cancel_move(&self, handle: &str) -> impl Future<Output = Result<i64, AdminError>> + Send;
}

/// [`QueueAdmin`] over the AWS SDK.
#[derive(Debug, Clone)]
pub(crate) struct SqsAdmin {
    client: Client,
}

impl SqsAdmin {
    /// Administration calls through `client` (its timeouts apply).
    pub(crate) fn new(client: Client) -> Self {
        Self { client }
    }
}

/// Counts the call, and turns an SDK error into an [`AdminError`] with its causes.
fn counted<T, E: std::error::Error>(
    operation: &'static str,
    result: Result<T, E>,
) -> Result<T, AdminError> {
    record_sqs_request(operation, &result);
    result.map_err(|error| AdminError {
        operation,
        detail: DisplayErrorContext(&error).to_string(),
    })
}

impl QueueAdmin for SqsAdmin {
    async fn attributes(
        &self,
        url: &str,
        names: &[QueueAttributeName],
    ) -> Result<Attributes, AdminError> {
        let result = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .set_attribute_names(Some(names.to_vec()))
            .send()
            .await;
        Ok(counted("GetQueueAttributes", result)?
            .attributes
            .unwrap_or_default())
    }

    async fn queue_url(&self, account: &str, name: &str) -> Result<String, AdminError> {
        let result = self
            .client
            .get_queue_url()
            .queue_name(name)
            .queue_owner_aws_account_id(account)
            .send()
            .await;
        counted("GetQueueUrl", result)?
            .queue_url
            .ok_or_else(|| AdminError {
                operation: "GetQueueUrl",
                detail: format!("no URL returned for {name}"),
            })
    }

    async fn start_move(
        &self,
        source_arn: &str,
        destination_arn: &str,
        per_second: Option<i32>,
    ) -> Result<String, AdminError> {
        let result = self
            .client
            .start_message_move_task()
            .source_arn(source_arn)
            .destination_arn(destination_arn)
            .set_max_number_of_messages_per_second(per_second)
            .send()
            .await;
        Ok(counted("StartMessageMoveTask", result)?
            .task_handle()
            .unwrap_or_default()
            .to_owned())
    }

    async fn list_moves(&self, source_arn: &str) -> Result<Vec<MoveTask>, AdminError> {
        let result = self
            .client
            .list_message_move_tasks()
            .source_arn(source_arn)
            .max_results(10)
            .send()
            .await;
        Ok(counted("ListMessageMoveTasks", result)?
            .results()
            .iter()
            .map(|entry| MoveTask {
                handle: entry.task_handle().map(str::to_owned),
                status: entry.status().unwrap_or("UNKNOWN").to_owned(),
                moved: entry.approximate_number_of_messages_moved(),
                total: entry.approximate_number_of_messages_to_move(),
                failure_reason: entry.failure_reason().map(str::to_owned),
                started_ms: Some(entry.started_timestamp()).filter(|&ms| ms > 0),
            })
            .collect())
    }

    async fn cancel_move(&self, handle: &str) -> Result<i64, AdminError> {
        let result = self
            .client
            .cancel_message_move_task()
            .task_handle(handle)
            .send()
            .await;
        Ok(counted("CancelMessageMoveTask", result)?.approximate_number_of_messages_moved())
    }
}
