//! The window: every message the worker holds (received, not yet deleted or released) holds
//! one of `WORKER_MAX_IN_FLIGHT` permits. A receive first reserves room for all it asks for,
//! so the window is never exceeded; a [`Held`] message gives its permit back when dropped,
//! whatever path it took. The window also remembers, per held message, its receipt, when its
//! visibility runs out and when it was sent: the heartbeat extends what would expire, the
//! lag reads the oldest, and shutdown releases what is left.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::metrics;
use crate::sqs::Receipt;

/// The bound on held messages, shared by the receiver, the writer, the deleter and the
/// heartbeat.
#[derive(Debug)]
pub(crate) struct Window {
    permits: Arc<Semaphore>,
    capacity: usize,
    held: Mutex<Registry>,
}

#[derive(Debug, Default)]
struct Registry {
    next_key: u64,
    entries: HashMap<u64, Entry>,
}

#[derive(Debug)]
struct Entry {
    receipt: Receipt,
    hidden_until: Instant,
    sent_ms: Option<u64>,
    /// The message's `source` label (see `metrics/sources.rs`).
    source: Arc<str>,
}

/// A received message as the window takes it: its receipt, `SentTimestamp` (ms since the
/// epoch) and source label.
pub(crate) type Admitted = (Receipt, Option<u64>, Arc<str>);

/// Room reserved for one receive; what the receive does not fill is given back on drop.
#[derive(Debug)]
pub(crate) struct Reservation {
    window: Arc<Window>,
    permits: Option<OwnedSemaphorePermit>,
}

/// One held message's place in the window, given back when dropped.
#[derive(Debug)]
pub(crate) struct Held {
    window: Arc<Window>,
    key: u64,
    _permit: OwnedSemaphorePermit,
}

impl Window {
    /// A window of `capacity` messages.
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        metrics::gauge_in_flight(0);
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(capacity)),
            capacity,
            held: Mutex::default(),
        })
    }

    /// The most messages held at once.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Messages held now.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.registry().entries.len()
    }

    /// Free room now.
    #[cfg(test)]
    pub(crate) fn room(&self) -> usize {
        self.permits.available_permits()
    }

    /// Waits until there is room for `messages` (at most the capacity), and reserves it.
    pub(crate) async fn reserve(self: &Arc<Self>, messages: usize) -> Reservation {
        let wanted = messages.clamp(1, self.capacity) as u32;
        let permits = Arc::clone(&self.permits)
            .acquire_many_owned(wanted)
            .await
            .unwrap_or_else(|_| unreachable!("the window's semaphore is never closed"));
        Reservation {
            window: Arc::clone(self),
            permits: Some(permits),
        }
    }

    /// Receipts of the held messages whose visibility ends before `before`.
    pub(crate) fn expiring(&self, before: Instant) -> Vec<(u64, Receipt)> {
        self.registry()
            .entries
            .iter()
            .filter(|(_, entry)| entry.hidden_until < before)
            .map(|(key, entry)| (*key, entry.receipt.clone()))
            .collect()
    }

    /// Records that the messages `keys` (those still held) stay hidden until `until`.
    pub(crate) fn extended(&self, keys: &[u64], until: Instant) {
        let mut registry = self.registry();
        for key in keys {
            if let Some(entry) = registry.entries.get_mut(key) {
                entry.hidden_until = until;
            }
        }
    }

    /// Receipts of every held message (for the release at the end of the shutdown).
    pub(crate) fn all_receipts(&self) -> Vec<Receipt> {
        self.registry()
            .entries
            .values()
            .map(|entry| entry.receipt.clone())
            .collect()
    }

    /// `SentTimestamp` of the oldest held message, in ms since the epoch.
    pub(crate) fn oldest_sent_ms(&self) -> Option<u64> {
        self.registry()
            .entries
            .values()
            .filter_map(|entry| entry.sent_ms)
            .min()
    }

    /// `SentTimestamp` of the oldest held message of each source label that has one.
    pub(crate) fn oldest_sent_ms_by_source(&self) -> HashMap<Arc<str>, u64> {
        let mut oldest: HashMap<Arc<str>, u64> = HashMap::new();
        for entry in self.registry().entries.values() {
            if let Some(sent) = entry.sent_ms {
                oldest
                    .entry(Arc::clone(&entry.source))
                    .and_modify(|o| *o = (*o).min(sent))
                    .or_insert(sent);
            }
        }
        oldest
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic elsewhere never leaves the map half-updated; keep going with it.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Reservation {
    /// Room reserved.
    pub(crate) fn size(&self) -> usize {
        self.permits.as_ref().map_or(0, |p| p.num_permits())
    }

    /// Turns the reservation into one [`Held`] per received message (at most the reserved
    /// room: a receive never returns more than it asked for), hidden for `visibility` from
    /// now. The unused room goes back to the window.
    pub(crate) fn admit(
        mut self,
        messages: impl IntoIterator<Item = Admitted>,
        visibility: Duration,
    ) -> Vec<Held> {
        let hidden_until = Instant::now() + visibility;
        let mut held = Vec::new();
        let mut registry = self.window.registry();
        for (receipt, sent_ms, source) in messages {
            let Some(permits) = self.permits.as_mut() else {
                tracing::error!("a receive returned more messages than it asked for");
                break;
            };
            let permit = if permits.num_permits() > 1 {
                permits
                    .split(1)
                    .unwrap_or_else(|| unreachable!("more than one permit is left"))
            } else {
                match self.permits.take() {
                    Some(last) => last,
                    None => break,
                }
            };
            let key = registry.next_key;
            registry.next_key += 1;
            registry.entries.insert(
                key,
                Entry {
                    receipt,
                    hidden_until,
                    sent_ms,
                    source,
                },
            );
            held.push(Held {
                window: Arc::clone(&self.window),
                key,
                _permit: permit,
            });
        }
        metrics::gauge_in_flight(registry.entries.len());
        held
    }
}

impl Held {
    /// The message's key in the window (stable while held).
    #[cfg(test)]
    pub(crate) fn key(&self) -> u64 {
        self.key
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut registry = self.window.registry();
        registry.entries.remove(&self.key);
        metrics::gauge_in_flight(registry.entries.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipts(n: usize) -> Vec<Admitted> {
        (0..n)
            .map(|i| {
                let receipt = Receipt {
                    message_id: i.to_string(),
                    handle: format!("h{i}"),
                };
                (
                    receipt,
                    Some(1_000 + i as u64),
                    Arc::from(if i % 2 == 0 { "even" } else { "odd" }),
                )
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn room_is_reserved_held_and_given_back() {
        let window = Window::new(25);
        let first = window.reserve(10).await;
        let second = window.reserve(10).await;
        assert_eq!(window.room(), 5);
        let held = first.admit(receipts(4), Duration::from_secs(30));
        assert_eq!((held.len(), window.held(), window.room()), (4, 4, 11));
        drop(second);
        assert_eq!(window.room(), 21);
        assert_eq!(window.oldest_sent_ms(), Some(1_000));
        let by_source = window.oldest_sent_ms_by_source();
        assert_eq!(
            (by_source.get("even"), by_source.get("odd")),
            (Some(&1_000), Some(&1_001))
        );
        drop(held);
        assert_eq!((window.held(), window.room()), (0, 25));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reservation_waits_for_room_and_never_exceeds_the_window() {
        let window = Window::new(12);
        let held = window
            .reserve(10)
            .await
            .admit(receipts(10), Duration::from_secs(30));
        let waiting = tokio::spawn({
            let window = Arc::clone(&window);
            async move { window.reserve(10).await.size() }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "only 2 free: the receive waits");
        drop(held);
        assert_eq!(waiting.await.expect("reserve"), 10);
        // A window smaller than a receive reserves all of itself.
        assert_eq!(Window::new(3).reserve(10).await.size(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn extra_messages_are_refused_not_held() {
        let window = Window::new(5);
        let held = window
            .reserve(2)
            .await
            .admit(receipts(3), Duration::from_secs(1));
        assert_eq!((held.len(), window.held(), window.room()), (2, 2, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn expiring_messages_are_found_and_extended() {
        let window = Window::new(10);
        let held = window
            .reserve(3)
            .await
            .admit(receipts(3), Duration::from_secs(10));
        let soon = Instant::now() + Duration::from_secs(11);
        let expiring = window.expiring(soon);
        assert_eq!(expiring.len(), 3);
        window.extended(&[held[0].key()], soon + Duration::from_secs(10));
        assert_eq!(window.expiring(soon).len(), 2);
        assert_eq!(window.all_receipts().len(), 3);
    }
}
