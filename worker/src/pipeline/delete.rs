//! Deleting committed messages in full `DeleteMessageBatch` calls, across writes, with
//! several calls in flight. A partial batch goes only when no call is in flight (or at the
//! end): while one is, more committed messages gather to fill the next. Every entry is
//! checked ([`Queue::delete`]); a message leaves the window once its delete is done.
//!
//! The S3 objects of offloaded webhooks (see `pipeline/resolve.rs`) are deleted first, then their
//! messages: a message is never gone while its object stays for no one. A failed object
//! delete is logged and counted, never retried here, and does not hold back the message's
//! delete: the bucket's lifecycle rule expires what is left.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinSet;
use webhook_shared::large_payload::PayloadPointer;
use webhook_shared::sqs::MAX_BATCH_ENTRIES;

use crate::metrics;
use crate::pipeline::window::Held;
use crate::s3::PayloadObjects;
use crate::sqs::{Queue, QueueClient, Receipt};

/// Most `DeleteMessageBatch` calls in flight at once.
pub(crate) const MAX_DELETE_CALLS: usize = 16;

/// A message whose event is committed (new or duplicate).
#[derive(Debug)]
pub(crate) struct Committed {
    /// The message to delete.
    pub(crate) receipt: Receipt,
    /// Its place in the window, given back once it is deleted.
    pub(crate) held: Held,
    /// The S3 object its envelope came from, deleted before the message.
    pub(crate) object: Option<PayloadPointer>,
}

/// Deletes what arrives until the writer has stopped and everything is deleted.
pub(crate) async fn run<C: QueueClient, O: PayloadObjects>(
    mut incoming: UnboundedReceiver<Vec<Committed>>,
    queue: Arc<Queue<C>>,
    objects: Arc<O>,
) {
    let mut waiting: VecDeque<Committed> = VecDeque::new();
    let mut calls: JoinSet<()> = JoinSet::new();
    let mut open = true;
    loop {
        if !open && waiting.is_empty() && calls.is_empty() {
            break;
        }
        tokio::select! {
            Some(done) = calls.join_next(), if !calls.is_empty() => {
                if let Err(error) = done {
                    tracing::error!(%error, "a delete task panicked");
                }
            }
            received = incoming.recv(), if open => match received {
                Some(committed) => waiting.extend(committed),
                None => open = false,
            },
        }
        while let Ok(committed) = incoming.try_recv() {
            waiting.extend(committed);
        }
        while calls.len() < MAX_DELETE_CALLS
            && (waiting.len() >= MAX_BATCH_ENTRIES
                || (!waiting.is_empty() && (calls.is_empty() || !open)))
        {
            let take = waiting.len().min(MAX_BATCH_ENTRIES);
            let batch: Vec<Committed> = waiting.drain(..take).collect();
            let queue = Arc::clone(&queue);
            let objects = Arc::clone(&objects);
            calls.spawn(async move {
                let mut receipts = Vec::with_capacity(batch.len());
                let mut held = Vec::with_capacity(batch.len());
                let mut pointers = Vec::new();
                for committed in batch {
                    receipts.push(committed.receipt);
                    held.push(committed.held);
                    pointers.extend(committed.object);
                }
                delete_objects(&objects, pointers).await;
                queue.delete(&receipts).await;
                drop(held);
            });
        }
        metrics::gauge_waiting("delete", waiting.len());
    }
}

/// Deletes the objects, all at once; failures are logged (and counted in
/// `webhook_s3_requests_total`) and left to the bucket's lifecycle rule.
async fn delete_objects<O: PayloadObjects>(objects: &Arc<O>, pointers: Vec<PayloadPointer>) {
    let mut deletes = JoinSet::new();
    for pointer in pointers {
        let objects = Arc::clone(objects);
        deletes.spawn(async move {
            if let Err(error) = objects.delete(&pointer).await {
                tracing::warn!(bucket = %pointer.bucket, key = %pointer.key, %error, "deleting a committed webhook's S3 object failed; the bucket's lifecycle rule will expire it");
            }
        });
    }
    while let Some(done) = deletes.join_next().await {
        if let Err(error) = done {
            tracing::error!(%error, "an S3 delete task panicked");
        }
    }
}
