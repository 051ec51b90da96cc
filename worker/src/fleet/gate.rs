//! The connection gate: every use of a pool connection (a batch write, the circuit's probe,
//! the lease heartbeat) first takes one of its permits, so the connections this worker holds
//! never outnumber the permits, its grant. Without a connection budget the gate is simply
//! `DATABASE_MAX_CONNECTIONS` permits forever.
//!
//! The heartbeat goes first: while it waits ([`Gate::acquire_first`]), the next permit given
//! back goes to it, not to a waiting write, so it needs one write of its worker to end, never
//! a connection outside the grant (see `timing.rs` for how long it may wait).
//!
//! With a budget, the lease (see `lease.rs`) moves the grant: growing adds permits at once;
//! shrinking first lowers the grant the writer and the receiver see (no new write starts above
//! it), then takes the surplus permits back as the writes holding them end. The grant also
//! lapses: once the lease has gone unrenewed for a whole lease period by this worker's own
//! clock, no permit is handed out until it is renewed, since the other workers may already
//! have shared this worker's connections among themselves.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};
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
    /// Where the next permit a write takes goes instead, while the heartbeat waits for one.
    heartbeat: Mutex<Option<oneshot::Sender<Permit>>>,
}

/// The heartbeat's claim on the next permit; withdrawn when dropped.
struct Claim<'a>(&'a Gate);

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        *self.0.heartbeat() = None;
    }
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
            heartbeat: Mutex::new(None),
        }
    }

    fn heartbeat(&self) -> std::sync::MutexGuard<'_, Option<oneshot::Sender<Permit>>> {
        self.heartbeat
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a permit (after the heartbeat, if it waits for one too); fails at once, or
    /// once one is free, if the lease has lapsed.
    pub(crate) async fn acquire(&self) -> Result<Permit, Lapsed> {
        loop {
            self.check()?;
            let permit = self.next_permit().await;
            self.check()?;
            // Handed to the heartbeat: wait for the next one.
            if let Some(permit) = self.hand_to_heartbeat(permit) {
                return Ok(permit);
            }
        }
    }

    /// A permit for the lease's heartbeat, before any write: a free one at once, else the
    /// next one given back. Never refused for a lapsed lease (the heartbeat renews it).
    pub(crate) async fn acquire_first(&self) -> Permit {
        if let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() {
            return permit;
        }
        let (claim, mut handed) = oneshot::channel();
        *self.heartbeat() = Some(claim);
        let _claim = Claim(self);
        tokio::select! {
            Ok(permit) = &mut handed => permit,
            // No write was waiting: the permit came straight here. One handed over
            // meanwhile is dropped with `handed`, back to the semaphore.
            permit = self.next_permit() => permit,
        }
    }

    async fn next_permit(&self) -> Permit {
        Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .unwrap_or_else(|_| unreachable!("the gate's semaphore is never closed"))
    }

    /// Gives `permit` to the heartbeat if it waits for one; else returns it.
    fn hand_to_heartbeat(&self, permit: Permit) -> Option<Permit> {
        let Some(claim) = self.heartbeat().take() else {
            return Some(permit);
        };
        // `Err`: the heartbeat stopped waiting; the permit stays here.
        claim.send(permit).err()
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

    /// When the grant lapses unless renewed (`None`: never).
    pub(crate) fn valid_until(&self) -> Option<Instant> {
        self.state().valid_until
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

    /// A leased gate with `permits`, valid for a while.
    async fn granted_gate(permits: usize) -> Arc<Gate> {
        let gate = Arc::new(Gate::leased());
        gate.renew(Instant::now() + Duration::from_secs(3600));
        gate.set(permits, Duration::ZERO).await;
        gate
    }

    #[tokio::test(start_paused = true)]
    async fn the_heartbeat_takes_a_free_permit_at_once() {
        let gate = granted_gate(1).await;
        let permit = gate.acquire_first().await;
        assert!(
            tokio::time::timeout(Duration::from_secs(60), gate.acquire())
                .await
                .is_err(),
            "the only permit is the heartbeat's"
        );
        drop(permit);
        drop(gate.acquire().await.expect("back"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_heartbeat_gets_the_next_permit_before_the_writes_waiting_for_one() {
        let gate = granted_gate(2).await;
        let first = gate.acquire().await.expect("valid");
        let second = gate.acquire().await.expect("valid");
        // Two writes wait, then the heartbeat.
        let writes: Vec<_> = (0..2)
            .map(|_| {
                let gate = Arc::clone(&gate);
                tokio::spawn(async move { gate.acquire().await.map(drop) })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(1)).await;
        let heartbeat = tokio::spawn({
            let gate = Arc::clone(&gate);
            async move { gate.acquire_first().await }
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        drop(first);
        let beat = heartbeat.await.expect("the heartbeat got the permit");
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(
            writes.iter().all(|write| !write.is_finished()),
            "no write went before the heartbeat"
        );
        // Once the heartbeat is done, the writes take their turns.
        drop(beat);
        drop(second);
        for write in writes {
            write.await.expect("joined").expect("valid");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_heartbeat_that_gave_up_leaves_the_next_permit_to_the_writes() {
        let gate = granted_gate(1).await;
        let only = gate.acquire().await.expect("valid");
        assert!(
            tokio::time::timeout(Duration::from_secs(1), gate.acquire_first())
                .await
                .is_err(),
            "nothing given back yet"
        );
        let write = tokio::spawn({
            let gate = Arc::clone(&gate);
            async move { gate.acquire().await.map(drop) }
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        drop(only);
        tokio::time::timeout(Duration::from_secs(1), write)
            .await
            .expect("the write got the permit")
            .expect("joined")
            .expect("valid");
        assert!(gate.heartbeat().is_none(), "the claim was withdrawn");
    }

    #[tokio::test(start_paused = true)]
    async fn the_heartbeat_is_served_while_the_lease_has_lapsed() {
        let gate = granted_gate(1).await;
        gate.lapse();
        assert!(gate.acquire().await.is_err());
        drop(gate.acquire_first().await);
    }
}
