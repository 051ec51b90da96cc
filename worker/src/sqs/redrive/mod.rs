//! `worker redrive`: moves the dead-letter queue's messages back to the main queue with
//! SQS's StartMessageMoveTask, then reports progress until the move ends. Run it once the
//! cause of the failures is fixed; the worker stores the moved messages as usual.

#![allow(
    clippy::print_stdout,
    reason = "progress lines on stdout are this command's output"
)]

use std::time::Duration;

use anyhow::{Context as _, bail};
use aws_sdk_sqs::types::QueueAttributeName;
use webhook_shared::sqs::{self as sdk_sqs, ClientTimeouts};

use crate::config::RedriveArgs;
use crate::sqs::admin::{QueueAdmin, SqsAdmin};
use crate::sqs::queue_info;

/// Starts the move and prints progress until it has finished, failed or been cancelled.
pub(crate) async fn run(args: &RedriveArgs) -> anyhow::Result<()> {
    let admin = SqsAdmin::new(
        sdk_sqs::client(ClientTimeouts {
            attempt: Duration::from_secs(10),
            max_attempts: 3,
        })
        .await,
    );
    redrive(
        &admin,
        args,
        Duration::from_secs(args.progress_interval_seconds),
    )
    .await
}

/// Moves the DLQ's messages back through `admin`, printing progress every `every`.
async fn redrive(
    admin: &impl QueueAdmin,
    args: &RedriveArgs,
    every: Duration,
) -> anyhow::Result<()> {
    let queue_url = args.queue.url()?;
    let info = queue_info::discover(admin, queue_url, args.dead_letters.dlq_url.clone()).await;
    let dlq_url = info
        .dlq_url
        .context("no dead-letter queue: set DLQ_URL or give the main queue a RedrivePolicy")?;
    let source_arn = queue_arn(admin, &dlq_url)
        .await
        .context("reading the DLQ's ARN")?;
    let destination_arn = queue_arn(admin, queue_url)
        .await
        .context("reading the main queue's ARN")?;
    let task = admin
        .start_move(&source_arn, &destination_arn, args.max_per_second)
        .await?;
    println!("moving messages from {dlq_url} to {queue_url}");
    let mut ticks = tokio::time::interval(every);
    loop {
        ticks.tick().await;
        let listed = admin.list_moves(&source_arn).await?;
        // Newest first. Only a running task carries its handle, so a finished one is the
        // newest entry for this source.
        let entry = listed
            .iter()
            .find(|entry| entry.handle.as_deref() == Some(task.as_str()))
            .or(listed.first());
        let Some(entry) = entry else {
            bail!("no move task is listed for {dlq_url}");
        };
        let total = entry
            .total
            .map_or_else(|| "?".to_owned(), |n| n.to_string());
        println!("{}: {} of {total} moved", entry.status, entry.moved);
        match entry.status.as_str() {
            "RUNNING" | "CANCELLING" => {}
            "COMPLETED" => return Ok(()),
            other => bail!(
                "the move ended {other}: {}",
                entry.failure_reason.as_deref().unwrap_or("no reason given")
            ),
        }
    }
}

async fn queue_arn(admin: &impl QueueAdmin, url: &str) -> anyhow::Result<String> {
    admin
        .attributes(url, &[QueueAttributeName::QueueArn])
        .await?
        .remove(&QueueAttributeName::QueueArn)
        .with_context(|| format!("{url} has no QueueArn"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DeadLetterArgs;
    use crate::sqs::admin::MoveTask;
    use crate::testing::admin::FakeAdmin;
    use webhook_shared::config::QueueArgs;

    const MAIN: &str = "http://sqs/000000000000/hooks";
    const DLQ: &str = "http://sqs/000000000000/hooks-dlq";

    fn args() -> RedriveArgs {
        RedriveArgs {
            queue: QueueArgs {
                queue_url: Some(MAIN.into()),
            },
            dead_letters: DeadLetterArgs {
                dlq_url: Some(DLQ.into()),
            },
            max_per_second: Some(50),
            progress_interval_seconds: 1,
        }
    }

    fn task(handle: Option<&str>, status: &str, moved: i64) -> MoveTask {
        MoveTask {
            handle: handle.map(str::to_owned),
            status: status.into(),
            moved,
            total: Some(10),
            failure_reason: (status == "FAILED").then(|| "AccessDenied".to_owned()),
        }
    }

    fn admin() -> FakeAdmin {
        let admin = FakeAdmin::default();
        admin.set(MAIN, QueueAttributeName::QueueArn, "arn:main");
        admin.set(DLQ, QueueAttributeName::QueueArn, "arn:dlq");
        admin
    }

    #[tokio::test(start_paused = true)]
    async fn moves_from_the_dlq_to_the_main_queue_until_the_task_completes() {
        let admin = admin();
        admin.state().listings = [
            vec![task(Some("task-1"), "RUNNING", 3)],
            // Finished: no handle any more, the newest entry for the source.
            vec![task(None, "COMPLETED", 10), task(None, "FAILED", 0)],
        ]
        .into();
        redrive(&admin, &args(), Duration::from_secs(1))
            .await
            .expect("completed");
        let state = admin.state();
        assert_eq!(
            state.moves,
            vec![("arn:dlq".to_owned(), "arn:main".to_owned(), Some(50))]
        );
        let lists = state
            .calls
            .iter()
            .filter(|(op, _)| *op == "ListMessageMoveTasks")
            .count();
        assert_eq!(lists, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_move_is_an_error_with_its_reason() {
        let admin = admin();
        admin.state().listings = [vec![task(None, "FAILED", 0)]].into();
        let error = redrive(&admin, &args(), Duration::from_secs(1))
            .await
            .expect_err("failed");
        assert!(format!("{error:#}").contains("AccessDenied"), "{error:#}");
    }

    #[tokio::test(start_paused = true)]
    async fn no_dlq_and_no_arn_are_errors_that_say_so() {
        let admin = FakeAdmin::default();
        let mut no_dlq = args();
        no_dlq.dead_letters.dlq_url = None;
        let error = redrive(&admin, &no_dlq, Duration::from_secs(1))
            .await
            .expect_err("no dlq");
        assert!(format!("{error:#}").contains("DLQ_URL"), "{error:#}");
        let error = redrive(&admin, &args(), Duration::from_secs(1))
            .await
            .expect_err("no arn");
        assert!(
            format!("{error:#}").contains("has no QueueArn"),
            "{error:#}"
        );
        assert!(admin.state().moves.is_empty());
    }
}
