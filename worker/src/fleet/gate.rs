//! The connection gate: every use of a pool connection (a batch write, the circuit's probe,
//! the lease heartbeat) first takes one of its permits, so the connections this worker holds
//! never outnumber the permits, its grant. Without a connection budget the gate is simply
//! `DATABASE_MAX_CONNECTIONS` permits forever.
//!
//! With a budget, the lease (see `lease.rs`) moves the grant: growing adds permits at once;
//! shrinking first lowers the grant the writer and the receiver see (no new write starts above
//! it), then takes the surplus permits back as the writes holding them end. The grant also
//! lapses: once the lease has gone unrenewed for a whole lease period by this worker's own
//! clock, no permit is handed out until it is renewed, since the other workers may already
//! have shared this worker's connections among themselves.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

use crate::metrics;

/// A permit to use one pool connection; the connection is given back before it is dropped.
pub(crate) type Permit = OwnedSemaphorePermit;

/// The lease lapsed: this worker may not use a connection until it renews it.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("this worker's share of DATABASE_CONNECTION_BUDGET lapsed (lease not renewed in time)")]
pub(crate) struct Lapsed;

/// What the lease changes.
#[derive(Debug)]
struct State {
    /// Permits in existence, held or free: the connections this worker may hold.
    capacity: usize,
    /// When the grant lapses unless renewed; `None`: never.
    valid_until: Option<Instant>,
}

/// The connection gate; see the module documentation.
#[derive(Debug)]
pub(crate) struct Gate {
    permits: Arc<Semaphore>,
    state: Mutex<State>,
    /// The grant: what new writes may use (at most `capacity`; lower while shrinking).
    grant: watch::Sender<usize>,
}

impl Gate {
    /// `connections` permits forever (no connection budget).
    pub(crate) fn fixed(connections: usize) -> Self {
        Self::new(connections, None)
    }

    /// No permit until the lease grants some.
    pub(crate) fn leased() -> Self {
        Self::new(0, Some(Instant::now()))
    }

    fn new(capacity: usize, valid_until: Option<Instant>) -> Self {
        metrics::gauge_connection_grant(capacity);
        Self {
            permits: Arc::new(Semaphore::new(capacity)),
            state: Mutex::new(State {
                capacity,
                valid_until,
            }),
            grant: watch::Sender::new(capacity),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a permit; fails at once, or once one is free, if the lease has lapsed.
    pub(crate) async fn acquire(&self) -> Result<Permit, Lapsed> {
        self.check()?;
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .unwrap_or_else(|_| unreachable!("the gate's semaphore is never closed"));
        self.check()?;
        Ok(permit)
    }

    /// `Err` if the lease has lapsed.
    fn check(&self) -> Result<(), Lapsed> {
        match self.state().valid_until {
            Some(until) if Instant::now() >= until => Err(Lapsed),
            _ => Ok(()),
        }
    }

    /// Whether the lease has lapsed (always `false` without a budget).
    pub(crate) fn lapsed(&self) -> bool {
        self.check().is_err()
    }

    /// The grant: most writes that may start now.
    pub(crate) fn grant(&self) -> usize {
        *self.grant.borrow()
    }

    /// Follows the grant.
    pub(crate) fn subscribe(&self) -> watch::Receiver<usize> {
        self.grant.subscribe()
    }

    /// Waits until the grant is at least 1.
    pub(crate) async fn granted(&self) {
        let mut grant = self.grant.subscribe();
        // The sender lives as long as `self`: waiting cannot fail.
        let _ = grant.wait_for(|grant| *grant > 0).await;
    }

    /// Permits in existence: the connections this worker may hold until a shrink completes.
    pub(crate) fn capacity(&self) -> usize {
        self.state().capacity
    }

    /// The lease was renewed: the grant stands until `until`.
    pub(crate) fn renew(&self, until: Instant) {
        self.state().valid_until = Some(until);
    }

    /// The lease is lost: no permit is handed out until the next renewal.
    pub(crate) fn lapse(&self) {
        self.state().valid_until = Some(Instant::now());
    }

    /// Moves the grant to `to`. Growing adds permits at once. Shrinking lowers the grant at
    /// once, then waits up to `within` for the surplus permits to be given back, and forgets
    /// them; returns `false` if they were not all back in time (the capacity stays as it was;
    /// call again to finish).
    pub(crate) async fn set(&self, to: usize, within: Duration) -> bool {
        let capacity = self.capacity();
        if to >= capacity {
            self.permits.add_permits(to - capacity);
            self.state().capacity = to;
            self.publish(to);
            return true;
        }
        self.publish(to);
        let surplus = u32::try_from(capacity - to).unwrap_or(u32::MAX);
        match tokio::time::timeout(within, self.permits.acquire_many(surplus)).await {
            Ok(Ok(permits)) => {
                permits.forget();
                self.state().capacity = to;
                true
            }
            Ok(Err(_)) => unreachable!("the gate's semaphore is never closed"),
            Err(_) => false,
        }
    }

    fn publish(&self, grant: usize) {
        self.grant.send_if_modified(|current| {
            let changed = *current != grant;
            *current = grant;
            changed
        });
        metrics::gauge_connection_grant(grant);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_fixed_gate_hands_out_its_permits_and_never_lapses() {
        let gate = Gate::fixed(2);
        let first = gate.acquire().await.expect("never lapses");
        let _second = gate.acquire().await.expect("never lapses");
        assert!(
            tokio::time::timeout(Duration::from_secs(60), gate.acquire())
                .await
                .is_err(),
            "a third write waits"
        );
        drop(first);
        drop(gate.acquire().await.expect("a permit came back"));
        assert!(!gate.lapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn growing_is_immediate_and_shrinking_waits_for_the_writes_in_progress() {
        let gate = Gate::leased();
        assert_eq!((gate.grant(), gate.capacity()), (0, 0));
        assert!(gate.lapsed(), "nothing before the first renewal");
        gate.renew(Instant::now() + Duration::from_secs(10));
        assert!(gate.set(3, Duration::ZERO).await);
        assert_eq!((gate.grant(), gate.capacity()), (3, 3));
        let writes: Vec<Permit> = vec![
            gate.acquire().await.expect("valid"),
            gate.acquire().await.expect("valid"),
        ];
        // Down to 1 while two writes are in progress: the grant drops at once, the capacity
        // only once one of them has ended.
        assert!(!gate.set(1, Duration::from_secs(1)).await);
        assert_eq!((gate.grant(), gate.capacity()), (1, 3));
        let mut writes = writes.into_iter();
        drop(writes.next());
        assert!(gate.set(1, Duration::from_secs(1)).await);
        assert_eq!((gate.grant(), gate.capacity()), (1, 1));
        drop(writes);
        let _only = gate.acquire().await.expect("valid");
        assert!(
            tokio::time::timeout(Duration::from_secs(60), gate.acquire())
                .await
                .is_err(),
            "one permit left"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_lapsed_lease_hands_out_nothing() {
        let gate = Gate::leased();
        gate.renew(Instant::now() + Duration::from_secs(10));
        gate.set(2, Duration::ZERO).await;
        drop(gate.acquire().await.expect("valid"));
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(gate.lapsed());
        assert!(gate.acquire().await.is_err());
        gate.renew(Instant::now() + Duration::from_secs(10));
        drop(gate.acquire().await.expect("renewed"));
        gate.lapse();
        assert!(gate.acquire().await.is_err());
    }

    #[tokio::test]
    async fn waiting_for_a_grant_ends_when_one_comes() {
        let gate = Arc::new(Gate::leased());
        let waiting = tokio::spawn({
            let gate = Arc::clone(&gate);
            async move { gate.granted().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        gate.set(1, Duration::ZERO).await;
        waiting.await.expect("woken");
    }
}
