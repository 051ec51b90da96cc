//! The quarantine: refused events wait here, oldest first, for the refusal fuse's window
//! before they go to the dead-letter queue (see `pipeline/dead_letters.rs`), so that when
//! many are refused alike the fuse can release them instead.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;
use tokio::time::Instant;
use webhook_shared::large_payload::PayloadPointer;

use crate::pipeline::refusal_fuse;
use crate::pipeline::window::Held;
use crate::sqs::InboundMessage;

/// One refused event waiting for the dead-letter queue.
#[derive(Debug)]
pub(crate) struct Refusal {
    /// Its message, as it goes to the dead-letter queue.
    pub(crate) message: InboundMessage,
    /// Its place in the window.
    pub(crate) held: Held,
    /// Why it was refused.
    pub(crate) reason: Cow<'static, str>,
    /// The S3 object of an offloaded event (its message is the pointer).
    pub(crate) object: Option<PayloadPointer>,
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

    /// Resolves when an event is put in quarantine (at once if one was put in since the
    /// last wait).
    pub(crate) async fn added(&self) {
        self.added.notified().await;
    }

    /// When the oldest waiting event is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.waiting().front().map(|r| r.at + refusal_fuse::WINDOW)
    }

    /// Takes the events due by `now` (all of them with `now` `None`).
    pub(crate) fn take_due(&self, now: Option<Instant>) -> Vec<Refusal> {
        let mut waiting = self.waiting();
        let due = waiting
            .iter()
            .take_while(|r| now.is_none_or(|now| r.at + refusal_fuse::WINDOW <= now))
            .count();
        waiting.drain(..due).collect()
    }
}
