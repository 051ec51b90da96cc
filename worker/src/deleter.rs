//! Deleting committed messages in full `DeleteMessageBatch` calls, across writes, with
//! several calls in flight. A partial batch goes only when no call is in flight (or at the
//! end): while one is, more committed messages gather to fill the next. Every entry is
//! checked ([`Queue::delete`]); a message leaves the window once its delete is done.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinSet;
use webhook_shared::sqs::MAX_BATCH_ENTRIES;

use crate::metrics;
use crate::queue::{Queue, QueueClient, Receipt};
use crate::window::Held;

/// Most `DeleteMessageBatch` calls in flight at once.
pub(crate) const MAX_DELETE_CALLS: usize = 16;

/// Deletes what arrives until the writer has stopped and everything is deleted.
pub(crate) async fn run<C: QueueClient>(
    mut incoming: UnboundedReceiver<Vec<(Receipt, Held)>>,
    queue: Arc<Queue<C>>,
) {
    let mut waiting: VecDeque<(Receipt, Held)> = VecDeque::new();
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
            let batch: Vec<(Receipt, Held)> = waiting.drain(..take).collect();
            let queue = Arc::clone(&queue);
            calls.spawn(async move {
                let (receipts, held): (Vec<Receipt>, Vec<Held>) = batch.into_iter().unzip();
                queue.delete(&receipts).await;
                drop(held);
            });
        }
        metrics::gauge_waiting("delete", waiting.len());
    }
}
