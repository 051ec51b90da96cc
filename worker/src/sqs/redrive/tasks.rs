//! The unfiltered `worker redrive`: SQS's message move tasks for the DLQ. Starts one (or
//! follows the one already running: SQS allows one per source queue) and prints its
//! progress until it ends; `--status` lists the recent ones, `--cancel` stops the running
//! one. Stopping the command while it follows leaves the task running.

#![allow(
    clippy::print_stdout,
    reason = "progress lines on stdout are this command's output"
)]

use std::time::Duration;

use anyhow::bail;
use chrono::{DateTime, SecondsFormat};
use tokio_util::sync::CancellationToken;

use crate::sqs::admin::{MoveTask, QueueAdmin};

/// Status of a task in progress (the only one with a handle).
const RUNNING: &str = "RUNNING";

/// A task's one-line account: status, counts, start time and failure reason.
pub(crate) fn describe(task: &MoveTask) -> String {
    let total = task.total.map_or_else(|| "?".to_owned(), |n| n.to_string());
    let mut line = format!("{}: {} of {total} moved", task.status, task.moved);
    if let Some(started) = task.started_ms.and_then(DateTime::from_timestamp_millis) {
        line.push_str(&format!(
            ", started {}",
            started.to_rfc3339_opts(SecondsFormat::Secs, true)
        ));
    }
    if let Some(reason) = &task.failure_reason {
        line.push_str(&format!(", failed: {reason}"));
    }
    line
}

/// The running task of `source_arn`, if any.
async fn running(admin: &impl QueueAdmin, source_arn: &str) -> anyhow::Result<Option<MoveTask>> {
    Ok(admin
        .list_moves(source_arn)
        .await?
        .into_iter()
        .find(|task| task.status == RUNNING && task.handle.is_some()))
}

/// Prints the recent move tasks of the DLQ `source_arn` (`dlq_url` for the reader).
pub(crate) async fn status(
    admin: &impl QueueAdmin,
    source_arn: &str,
    dlq_url: &str,
) -> anyhow::Result<()> {
    let tasks = admin.list_moves(source_arn).await?;
    if tasks.is_empty() {
        println!("no message move tasks for {dlq_url}");
    }
    for task in &tasks {
        println!("{}", describe(task));
    }
    Ok(())
}

/// Cancels the running move task of the DLQ `source_arn`, if there is one.
pub(crate) async fn cancel(
    admin: &impl QueueAdmin,
    source_arn: &str,
    dlq_url: &str,
) -> anyhow::Result<()> {
    let Some(task) = running(admin, source_arn).await? else {
        println!("no move task is running for {dlq_url}: nothing to cancel");
        return Ok(());
    };
    let handle = task.handle.unwrap_or_default();
    let moved = admin.cancel_move(&handle).await?;
    println!("cancelled the move from {dlq_url}: about {moved} messages moved");
    Ok(())
}

/// Starts moving the messages of `source_arn` to `destination_arn`, or takes the task
/// already running for the source; returns its handle.
pub(crate) async fn start_or_join(
    admin: &impl QueueAdmin,
    source_arn: &str,
    destination_arn: &str,
    per_second: Option<i32>,
) -> anyhow::Result<String> {
    if let Some(task) = running(admin, source_arn).await? {
        println!(
            "a move is already running for this DLQ; following it ({})",
            describe(&task)
        );
        return Ok(task.handle.unwrap_or_default());
    }
    Ok(admin
        .start_move(source_arn, destination_arn, per_second)
        .await?)
}

/// Prints the progress of task `handle` every `every` until it ends; an error unless it
/// completed. When `stop` is cancelled (Ctrl-C) it stops following and leaves the task
/// running.
pub(crate) async fn follow(
    admin: &impl QueueAdmin,
    source_arn: &str,
    handle: &str,
    every: Duration,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let mut ticks = tokio::time::interval(every);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => {
                println!(
                    "stopped following; the move goes on. To stop it: worker redrive --cancel"
                );
                return Ok(());
            }
            _ = ticks.tick() => {}
        }
        let listed = admin.list_moves(source_arn).await?;
        // Newest first. Only a running task carries its handle, so a finished one is the
        // newest entry for this source.
        let entry = listed
            .iter()
            .find(|entry| entry.handle.as_deref() == Some(handle))
            .or(listed.first());
        let Some(entry) = entry else {
            bail!("no move task is listed for the DLQ");
        };
        println!("{}", describe(entry));
        match entry.status.as_str() {
            RUNNING | "CANCELLING" => {}
            "COMPLETED" => return Ok(()),
            other => bail!(
                "the move ended {other}: {}",
                entry.failure_reason.as_deref().unwrap_or("no reason given")
            ),
        }
    }
}
