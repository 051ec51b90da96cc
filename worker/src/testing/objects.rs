//! [`FakeObjects`]: an in-memory S3 behind the [`PayloadObjects`] seam for unit tests, recording
//! what it was asked and, at each delete, what the queue and the store had done by then.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use webhook_shared::large_payload::PayloadPointer;

use crate::s3::{ObjectError, PayloadObjects};
use crate::testing::{EventStoreState, FakeEventStore, FakeQueue};

/// An in-memory bucket. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub(crate) struct FakeObjects {
    state: Arc<Mutex<ObjectsState>>,
}

/// One object delete and what had happened before it.
#[derive(Debug, Clone)]
pub(crate) struct DeleteSeen {
    /// The key deleted.
    pub(crate) key: String,
    /// Event ids committed by then (when a store is watched).
    pub(crate) committed: Vec<String>,
    /// Message ids deleted by then (when a queue is watched).
    pub(crate) messages_deleted: Vec<String>,
}

/// What the fake holds and what it was asked.
#[derive(Debug, Default)]
pub(crate) struct ObjectsState {
    /// Objects by key (the bucket is not checked).
    pub(crate) objects: HashMap<String, Vec<u8>>,
    /// Keys fetched, in order.
    pub(crate) gets: Vec<String>,
    /// Every delete, in order.
    pub(crate) deletes: Vec<DeleteSeen>,
    /// Gets in progress now.
    in_progress: usize,
    /// Most gets in progress at once.
    pub(crate) max_in_progress: usize,
    /// The next this many gets fail as a network error would.
    pub(crate) failing_gets: u32,
    /// While set, every get and probe fails (an S3 outage).
    pub(crate) down: bool,
    /// Probes made.
    pub(crate) probes: usize,
    /// While set, refreshes fail (and only they).
    pub(crate) failing_refreshes: bool,
    /// Keys refreshed (copied onto themselves), in order.
    pub(crate) refreshed: Vec<String>,
    /// Whether deletes fail.
    pub(crate) failing_deletes: bool,
    /// How long a get takes.
    pub(crate) get_delay: Duration,
    watched_queue: Option<FakeQueue>,
    watched_store: Option<Arc<Mutex<EventStoreState>>>,
}

impl FakeObjects {
    /// Locks the state.
    pub(crate) fn state(&self) -> MutexGuard<'_, ObjectsState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records, at each delete, what `queue` deleted and `store` committed by then.
    pub(crate) fn watch(&self, queue: &FakeQueue, store: &FakeEventStore) {
        let mut state = self.state();
        state.watched_queue = Some(queue.clone());
        state.watched_store = Some(Arc::clone(&store.state));
    }

    /// Stores an object.
    pub(crate) fn put(&self, key: &str, bytes: impl Into<Vec<u8>>) {
        self.state().objects.insert(key.to_owned(), bytes.into());
    }

    /// Whether the object is there.
    pub(crate) fn has(&self, key: &str) -> bool {
        self.state().objects.contains_key(key)
    }

    /// Every delete so far.
    pub(crate) fn deletes(&self) -> Vec<DeleteSeen> {
        self.state().deletes.clone()
    }
}

impl PayloadObjects for FakeObjects {
    async fn get(&self, pointer: &PayloadPointer, limit: u64) -> Result<Vec<u8>, ObjectError> {
        let delay = {
            let mut state = self.state();
            state.gets.push(pointer.key.clone());
            state.in_progress += 1;
            state.max_in_progress = state.max_in_progress.max(state.in_progress);
            state.get_delay
        };
        tokio::time::sleep(delay).await;
        let mut state = self.state();
        state.in_progress -= 1;
        if state.down || state.failing_gets > 0 {
            state.failing_gets = state.failing_gets.saturating_sub(1);
            return Err(ObjectError::Failed {
                operation: "GetObject",
                message: "connection reset".to_owned(),
            });
        }
        let bytes = state.objects.get(&pointer.key).ok_or(ObjectError::Gone)?;
        if bytes.len() as u64 > limit {
            return Err(ObjectError::TooLarge {
                size: bytes.len() as u64,
                limit,
            });
        }
        Ok(bytes.clone())
    }

    async fn refresh(&self, pointer: &PayloadPointer) -> Result<(), ObjectError> {
        let mut state = self.state();
        if state.down || state.failing_refreshes {
            return Err(ObjectError::Failed {
                operation: "CopyObject",
                message: "503 SlowDown".to_owned(),
            });
        }
        if !state.objects.contains_key(&pointer.key) {
            return Err(ObjectError::Gone);
        }
        state.refreshed.push(pointer.key.clone());
        Ok(())
    }

    async fn probe(&self, _bucket: &str) -> Result<(), ObjectError> {
        let mut state = self.state();
        state.probes += 1;
        if state.down {
            Err(ObjectError::Failed {
                operation: "HeadBucket",
                message: "503 SlowDown".to_owned(),
            })
        } else {
            Ok(())
        }
    }

    async fn delete(&self, pointer: &PayloadPointer) -> Result<(), ObjectError> {
        let (queue, store) = {
            let state = self.state();
            (state.watched_queue.clone(), state.watched_store.clone())
        };
        let seen = DeleteSeen {
            key: pointer.key.clone(),
            committed: store.map_or_else(Vec::new, |s| FakeEventStore::lock(&s).committed.clone()),
            messages_deleted: queue.map_or_else(Vec::new, |q| q.deleted()),
        };
        let mut state = self.state();
        state.deletes.push(seen);
        if state.failing_deletes {
            return Err(ObjectError::Failed {
                operation: "DeleteObject",
                message: "access denied".to_owned(),
            });
        }
        state.objects.remove(&pointer.key);
        Ok(())
    }
}
