//! `worker redrive`: moves the dead-letter queue's messages back to the main queue with
//! SQS's StartMessageMoveTask, then reports progress until the move ends. Run it once the
//! cause of the failures is fixed; the worker stores the moved messages as usual.

#![allow(
    clippy::print_stdout,
    reason = "progress lines on stdout are this command's output"
)]

use std::time::Duration;

use anyhow::{Context as _, bail};
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::QueueAttributeName;
use webhook_shared::metrics::record_sqs_request;
use webhook_shared::sqs::{self, ClientTimeouts};

use crate::config::RedriveArgs;
use crate::sqs::queue_info;

/// Starts the move and prints progress until it has finished, failed or been cancelled.
pub(crate) async fn run(args: &RedriveArgs) -> anyhow::Result<()> {
    let sqs = sqs::client(ClientTimeouts {
        attempt: Duration::from_secs(10),
        max_attempts: 3,
    })
    .await;
    let info = queue_info::discover(&sqs, &args.queue_url, args.dlq_url.clone()).await;
    let dlq_url = info
        .dlq_url
        .context("no dead-letter queue: set DLQ_URL or give the main queue a RedrivePolicy")?;
    let source_arn = queue_arn(&sqs, &dlq_url)
        .await
        .context("reading the DLQ's ARN")?;
    let destination_arn = queue_arn(&sqs, &args.queue_url)
        .await
        .context("reading the main queue's ARN")?;
    let result = sqs
        .start_message_move_task()
        .source_arn(&source_arn)
        .destination_arn(&destination_arn)
        .set_max_number_of_messages_per_second(args.max_per_second)
        .send()
        .await;
    record_sqs_request("StartMessageMoveTask", &result);
    let started = result.map_err(|error| {
        anyhow::anyhow!(
            "StartMessageMoveTask failed: {}",
            DisplayErrorContext(&error)
        )
    })?;
    let task = started.task_handle().unwrap_or_default().to_owned();
    println!("moving messages from {dlq_url} to {}", args.queue_url);
    let mut ticks = tokio::time::interval(Duration::from_secs(args.progress_interval_seconds));
    loop {
        ticks.tick().await;
        let result = sqs
            .list_message_move_tasks()
            .source_arn(&source_arn)
            .max_results(10)
            .send()
            .await;
        record_sqs_request("ListMessageMoveTasks", &result);
        let listed = result.map_err(|error| {
            anyhow::anyhow!(
                "ListMessageMoveTasks failed: {}",
                DisplayErrorContext(&error)
            )
        })?;
        // Newest first. Only a running task carries its handle, so a finished one is the
        // newest entry for this source.
        let entry = listed
            .results()
            .iter()
            .find(|entry| entry.task_handle() == Some(task.as_str()))
            .or(listed.results().first());
        let Some(entry) = entry else {
            bail!("no move task is listed for {dlq_url}");
        };
        let status = entry.status().unwrap_or("UNKNOWN");
        let moved = entry.approximate_number_of_messages_moved();
        let total = entry
            .approximate_number_of_messages_to_move()
            .map_or_else(|| "?".to_owned(), |n| n.to_string());
        println!("{status}: {moved} of {total} moved");
        match status {
            "RUNNING" | "CANCELLING" => {}
            "COMPLETED" => return Ok(()),
            other => bail!(
                "the move ended {other}: {}",
                entry.failure_reason().unwrap_or("no reason given")
            ),
        }
    }
}

async fn queue_arn(sqs: &Client, url: &str) -> anyhow::Result<String> {
    let result = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await;
    record_sqs_request("GetQueueAttributes", &result);
    result
        .map_err(|error| {
            anyhow::anyhow!(
                "GetQueueAttributes failed for {url}: {}",
                DisplayErrorContext(&error)
            )
        })?
        .attributes
        .and_then(|mut attributes| attributes.remove(&QueueAttributeName::QueueArn))
        .with_context(|| format!("{url} has no QueueArn"))
}
