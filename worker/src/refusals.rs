//! The quarantine of refused events: an event the database refused for good waits, still
//! held (the heartbeat keeps it hidden), for the refusal fuse's window (see `fuse.rs`) before
//! it goes to the dead-letter queue. If the fuse trips meanwhile, the refusal was the
//! database's condition and the event is released instead, to be written once the condition
//! has passed. At shutdown what waits is settled at once.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::batch::{self, BatchContext};
use crate::fuse;
use crate::metrics::{self, Outcome};
use crate::queue::{InboundMessage, QueueClient};
use crate::window::Held;

/// One refused event waiting for the dead-letter queue.
#[derive(Debug)]
pub(crate) struct Refusal {
    /// Its message, as it goes to the dead-letter queue.
    pub(crate) message: InboundMessage,
    /// Its place in the window.
    pub(crate) held: Held,
    /// Why it was refused.
    pub(crate) reason: Cow<'static, str>,
    /// When it was refused.
    pub(crate) at: Instant,
}

/// The refused events waiting, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Quarantine {
    waiting: Mutex<VecDeque<Refusal>>,
    added: Notify,
}

impl Quarantine {
    fn waiting(&self) -> MutexGuard<'_, VecDeque<Refusal>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts a refused event in quarantine.
    pub(crate) fn push(&self, refusal: Refusal) {
        self.waiting().push_back(refusal);
        self.added.notify_one();
    }

    /// When the oldest waiting event is due.
    fn next_due(&self) -> Option<Instant> {
        self.waiting().front().map(|r| r.at + fuse::WINDOW)
    }

    /// Takes the events due by `now` (all of them with `now` `None`).
    fn take_due(&self, now: Option<Instant>) -> Vec<Refusal> {
        let mut waiting = self.waiting();
        let due = waiting
            .iter()
            .take_while(|r| now.is_none_or(|now| r.at + fuse::WINDOW <= now))
            .count();
        waiting.drain(..due).collect()
    }
}

/// Settles quarantined events as they come due, until `stop`; then settles the rest at once.
pub(crate) async fn run<C: QueueClient, S, O>(
    context: &BatchContext<C, S, O>,
    stop: CancellationToken,
) {
    let quarantine = &context.quarantine;
    loop {
        let wake = async {
            match quarantine.next_due() {
                Some(due) => tokio::time::sleep_until(due).await,
                None => quarantine.added.notified().await,
            }
        };
        if stop.run_until_cancelled(wake).await.is_none() {
            settle(context, quarantine.take_due(None)).await;
            return;
        }
        settle(context, quarantine.take_due(Some(Instant::now()))).await;
    }
}

/// Sends each refusal to the dead-letter queue, or releases it if the fuse tripped since.
async fn settle<C: QueueClient, S, O>(context: &BatchContext<C, S, O>, refusals: Vec<Refusal>) {
    let mut release = Vec::new();
    for refusal in refusals {
        if context.fuse.tripped_since(refusal.at) {
            release.push((refusal.message, refusal.held));
            continue;
        }
        metrics::record_outcomes(Outcome::Refused, 1);
        context
            .queue
            .dead_letter(&refusal.message, &refusal.reason)
            .await;
        drop(refusal.held);
    }
    batch::release_held(context, release).await;
}
