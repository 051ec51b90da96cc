//! `worker redrive`: moves the dead-letter queue's messages back to the main queue. Run it
//! once the cause of the failures is fixed; the worker stores the moved messages as usual.
//! Without filters SQS moves them all (StartMessageMoveTask: `tasks.rs`, which also shows
//! and cancels the tasks); with filters, or `--dry-run`, the DLQ is scanned (`scan.rs`,
//! selecting with `filter.rs`). This module finds the queues and picks the way.

#![allow(
    clippy::print_stdout,
    reason = "the lines on stdout are this command's output"
)]

mod filter;
mod scan;
mod tasks;

use std::num::NonZeroU32;
use std::time::Duration;

use anyhow::Context as _;
use aws_sdk_sqs::types::QueueAttributeName;
use tokio_util::sync::CancellationToken;
use webhook_shared::shutdown;
use webhook_shared::sqs::{self as sdk_sqs, ClientTimeouts, is_fifo};

use crate::config::RedriveArgs;
use crate::sqs::admin::{QueueAdmin, SqsAdmin};
use crate::sqs::client::SqsQueue;
use crate::sqs::redrive::filter::Filter;
use crate::sqs::redrive::scan::{MAX_HELD, SCAN_WAIT, ScanSettings};
use crate::sqs::{Queue, queue_info};

/// Runs `worker redrive` with `args`; Ctrl-C (or SIGTERM) stops it cleanly.
pub(crate) async fn run(args: &RedriveArgs) -> anyhow::Result<()> {
    args.check()?;
    let sqs = sdk_sqs::client(ClientTimeouts {
        attempt: Duration::from_secs(10),
        max_attempts: 3,
    })
    .await;
    let admin = SqsAdmin::new(sqs.clone());
    let stop = CancellationToken::new();
    shutdown::cancel_on_signal(stop.clone()).context("installing signal handlers")?;
    if !args.scans() {
        return by_task(
            &admin,
            args,
            Duration::from_secs(args.progress_interval_seconds),
            &stop,
        )
        .await;
    }
    let filter = Filter::new(args)?;
    let queue_url = args.queue.url()?;
    let dlq_url = dlq_url(&admin, args).await?;
    let dlq = Queue::new(SqsQueue::new(sqs.clone(), dlq_url.clone(), None).with_wait(SCAN_WAIT));
    let main = SqsQueue::new(sqs, queue_url.to_owned(), None);
    let settings = ScanSettings {
        visibility: Duration::from_secs(args.scan_visibility_seconds),
        dry_run: args.dry_run,
        per_second: args
            .max_per_second
            .and_then(|rate| NonZeroU32::new(rate.unsigned_abs())),
        progress_every: Duration::from_secs(args.progress_interval_seconds),
        max_held: MAX_HELD,
    };
    if args.dry_run {
        println!("counting the messages of {dlq_url} the filters select (dry run)");
    } else {
        println!("moving the messages the filters select from {dlq_url} to {queue_url}");
    }
    if is_fifo(&dlq_url) {
        println!(
            "a FIFO DLQ gives each group in order: a message left in the DLQ holds back the rest of its group in this scan"
        );
    }
    let report = scan::scan(&dlq, &main, &filter, &settings, &stop)
        .await
        .context("scanning the DLQ")?;
    scan::print_summary(&report, &settings);
    Ok(())
}

/// The DLQ's URL: DLQ_URL, else the main queue's RedrivePolicy.
async fn dlq_url(admin: &impl QueueAdmin, args: &RedriveArgs) -> anyhow::Result<String> {
    let queue_url = args.queue.url()?;
    let info = queue_info::discover(admin, queue_url, args.dead_letters.dlq_url.clone()).await;
    info.dlq_url
        .context("no dead-letter queue: set DLQ_URL or give the main queue a RedrivePolicy")
}

/// The unfiltered ways, through SQS's move tasks: `--status`, `--cancel`, or a move (a new
/// one, or the one running) followed with a progress line every `every` until it ends or
/// `stop` is cancelled.
async fn by_task(
    admin: &impl QueueAdmin,
    args: &RedriveArgs,
    every: Duration,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let queue_url = args.queue.url()?;
    let dlq_url = dlq_url(admin, args).await?;
    let source_arn = queue_arn(admin, &dlq_url)
        .await
        .context("reading the DLQ's ARN")?;
    if args.status {
        return tasks::status(admin, &source_arn, &dlq_url)
            .await
            .context("listing the DLQ's move tasks");
    }
    if args.cancel {
        return tasks::cancel(admin, &source_arn, &dlq_url)
            .await
            .context("cancelling the DLQ's move task");
    }
    let destination_arn = queue_arn(admin, queue_url)
        .await
        .context("reading the main queue's ARN")?;
    let handle = tasks::start_or_join(admin, &source_arn, &destination_arn, args.max_per_second)
        .await
        .context("starting the move")?;
    println!("moving messages from {dlq_url} to {queue_url}");
    tasks::follow(admin, &source_arn, &handle, every, stop)
        .await
        .context("following the move")
}

async fn queue_arn(admin: &impl QueueAdmin, url: &str) -> anyhow::Result<String> {
    admin
        .attributes(url, &[QueueAttributeName::QueueArn])
        .await?
        .remove(&QueueAttributeName::QueueArn)
        .with_context(|| format!("{url} has no QueueArn"))
}

#[cfg(test)]
mod tests;
