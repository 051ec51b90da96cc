//! A budget of bytes held at once across a process, on a tokio [`Semaphore`]: ingest's
//! request bodies (`MAX_IN_FLIGHT_BODY_BYTES`, reserved without waiting as bytes arrive) and
//! the worker's fetched payloads (`WORKER_MAX_FETCHED_BYTES`, waited for in arrival order).
//! A [`Reservation`] gives its bytes back when dropped, however its holder ends, and every
//! change sets the budget's gauge to the bytes in use.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The shared budget. Cloning shares it.
#[derive(Debug, Clone)]
pub struct ByteBudget {
    bytes: Arc<Semaphore>,
    total: usize,
    /// The gauge set to the bytes in use after every change.
    gauge: &'static str,
}

/// Room held from a [`ByteBudget`]; given back on drop.
#[derive(Debug)]
pub struct Reservation {
    budget: ByteBudget,
    permit: Option<OwnedSemaphorePermit>,
}

/// The budget has no room for what was asked, now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no room in the byte budget")]
pub struct NoRoom;

impl ByteBudget {
    /// A budget of `total` bytes whose use is reported in the gauge `gauge`.
    pub fn new(total: usize, gauge: &'static str) -> Self {
        Self {
            bytes: Arc::new(Semaphore::new(total.min(Semaphore::MAX_PERMITS))),
            total,
            gauge,
        }
    }

    /// The budget's size.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes reserved now.
    pub fn in_use(&self) -> usize {
        self.total.saturating_sub(self.bytes.available_permits())
    }

    /// Whether `bytes` more would fit now (nothing is reserved).
    pub fn has_room_for(&self, bytes: usize) -> bool {
        bytes <= self.bytes.available_permits()
    }

    /// An empty reservation, to grow as bytes arrive.
    pub fn reservation(&self) -> Reservation {
        Reservation {
            budget: self.clone(),
            permit: None,
        }
    }

    /// Waits, in arrival order, for `bytes`: at least 1 and at most the whole budget, so
    /// that something larger than the budget waits for all of it rather than for ever.
    pub async fn take(&self, bytes: u64) -> Reservation {
        let most = u32::try_from(self.total.min(Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
        let wanted = u32::try_from(bytes)
            .unwrap_or(u32::MAX)
            .clamp(1, most.max(1));
        let permit = Arc::clone(&self.bytes)
            .acquire_many_owned(wanted)
            .await
            .unwrap_or_else(|_| unreachable!("the budget's semaphore is never closed"));
        let reservation = Reservation {
            budget: self.clone(),
            permit: Some(permit),
        };
        self.publish();
        reservation
    }

    fn publish(&self) {
        metrics::gauge!(self.gauge).set(self.in_use() as f64);
    }
}

impl Reservation {
    /// The budget this reservation is held in.
    pub fn budget(&self) -> &ByteBudget {
        &self.budget
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.permit.as_ref().map_or(0, |p| p.num_permits())
    }

    /// Grows the reservation to at least `bytes`, or fails at once without waiting.
    pub fn grow_to(&mut self, bytes: usize) -> Result<(), NoRoom> {
        let more = bytes.saturating_sub(self.bytes());
        if more == 0 {
            return Ok(());
        }
        let more = u32::try_from(more).map_err(|_| NoRoom)?;
        let extra = Arc::clone(&self.budget.bytes)
            .try_acquire_many_owned(more)
            .map_err(|_| NoRoom)?;
        match &mut self.permit {
            Some(permit) => permit.merge(extra),
            None => self.permit = Some(extra),
        }
        self.budget.publish();
        Ok(())
    }

    /// Gives back all but `bytes`.
    pub fn shrink_to(&mut self, bytes: usize) {
        if let Some(permit) = &mut self.permit {
            let surplus = permit.num_permits().saturating_sub(bytes);
            drop(permit.split(surplus));
            self.budget.publish();
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            drop(permit);
            self.budget.publish();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn reservations_grow_without_waiting_and_give_back_on_drop() {
        let budget = ByteBudget::new(100, "webhook_test_budget_bytes");
        let mut a = budget.reservation();
        a.grow_to(60).expect("room");
        assert_eq!((a.bytes(), budget.in_use()), (60, 60));
        let mut b = budget.reservation();
        assert_eq!(b.grow_to(50), Err(NoRoom));
        assert_eq!(b.bytes(), 0, "a failed grow takes nothing");
        a.shrink_to(10);
        assert_eq!(budget.in_use(), 10);
        b.grow_to(90).expect("room after the shrink");
        assert!(!budget.has_room_for(1));
        drop((a, b));
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn take_waits_in_order_and_clamps_to_the_whole_budget() {
        let budget = ByteBudget::new(100, "webhook_test_budget_bytes");
        let first = budget.take(80).await;
        // Larger than the budget: waits for all of it, never for ever.
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.take(1_000).await.bytes() }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiting.is_finished());
        drop(first);
        assert_eq!(waiting.await.expect("ran"), 100);
        assert_eq!(budget.take(0).await.bytes(), 1, "at least one byte");
    }
}
