//! [`FakeEventStore`]: an in-memory database behind the [`EventStore`] seam, answering each
//! batch as a test's [`Behaviour`] says and recording what it was given.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Semaphore;
use webhook_shared::envelope::Envelope;

use crate::db::handler::Stored;
use crate::db::store::{EventStore, Written};
use crate::db::write_error::WriteError;
use crate::sqs::payload::EventKey;

/// How the fake store answers a batch.
pub(crate) type Behaviour =
    Box<dyn Fn(&[Envelope]) -> Result<Vec<Stored>, WriteError> + Send + Sync>;

/// An in-memory store.
pub(crate) struct FakeEventStore {
    /// What it recorded.
    pub(crate) state: Arc<Mutex<EventStoreState>>,
    behaviour: Behaviour,
    delay: Duration,
    /// When set, each write waits for a permit (never given back) before answering.
    pub(crate) gate: Option<Arc<Semaphore>>,
    /// While set, probes fail as if the database were unreachable.
    pub(crate) down: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for FakeEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeEventStore").finish_non_exhaustive()
    }
}

/// What the fake store saw.
#[derive(Debug, Default)]
pub(crate) struct EventStoreState {
    /// Event ids committed (new or duplicate), in order.
    pub(crate) committed: Vec<String>,
    /// Events per write attempt.
    pub(crate) batches: Vec<usize>,
    /// Writes in progress now, and at most.
    pub(crate) in_progress: usize,
    /// Most writes in progress at once.
    pub(crate) max_in_progress: usize,
    /// Probes made.
    pub(crate) probes: usize,
}

impl FakeEventStore {
    /// A store that answers with `behaviour` after `delay`.
    pub(crate) fn new(delay: Duration, behaviour: Behaviour) -> Self {
        Self {
            state: Arc::default(),
            behaviour,
            delay,
            gate: None,
            down: Arc::default(),
        }
    }

    /// A store that stores everything as new after `delay`.
    pub(crate) fn accepting(delay: Duration) -> Self {
        Self::new(
            delay,
            Box::new(|events| Ok(vec![Stored::New; events.len()])),
        )
    }

    /// Locks the state.
    pub(crate) fn lock(state: &Arc<Mutex<EventStoreState>>) -> MutexGuard<'_, EventStoreState> {
        state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl EventStore for FakeEventStore {
    async fn write(&self, events: &[Envelope]) -> Result<Written, WriteError> {
        {
            let mut state = Self::lock(&self.state);
            state.batches.push(events.len());
            state.in_progress += 1;
            state.max_in_progress = state.max_in_progress.max(state.in_progress);
        }
        tokio::time::sleep(self.delay).await;
        if let Some(gate) = &self.gate {
            gate.acquire().await.map(|p| p.forget()).ok();
        }
        let result = (self.behaviour)(events);
        let mut state = Self::lock(&self.state);
        state.in_progress -= 1;
        if let Ok(results) = &result {
            for (event, stored) in events.iter().zip(results) {
                if !matches!(stored, Stored::Refused(_)) {
                    state.committed.push(event.id.clone());
                }
            }
        }
        result.map(|results| Written {
            results,
            acquire: Duration::ZERO,
        })
    }

    async fn stored(&self, events: &[EventKey]) -> Result<Vec<bool>, WriteError> {
        let state = Self::lock(&self.state);
        Ok(events
            .iter()
            .map(|event| state.committed.contains(&event.id))
            .collect())
    }

    async fn probe(&self) -> Result<(), WriteError> {
        Self::lock(&self.state).probes += 1;
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            Err(crate::HandlerError::from(sqlx::Error::PoolTimedOut).into())
        } else {
            Ok(())
        }
    }
}
