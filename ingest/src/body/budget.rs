//! The memory budget for request bodies: a global count of the body and message bytes that
//! requests hold at once (`MAX_IN_FLIGHT_BODY_BYTES`), so that no mix of clients, however
//! slow or hostile, can buffer more than that.
//!
//! A request reserves before it buffers, and only what arrived: each chunk of body is
//! reserved as it comes (a declared `Content-Length` is never reserved up front, so a client
//! that declares much and sends little holds little); a buffer's capacity is what is reserved,
//! and it grows by doubling only while the budget has room for the doubled size, else by
//! exactly what the chunk needs ([`grow_buffer`]). Then room for its SQS message while the
//! envelope is built; then only the message while it waits for SQS. A request that cannot get
//! room is refused at once (503 with `Retry-After`): it never waits for room and never buffers
//! what it could not reserve. One whose declared length is more than the budget has free is
//! refused from its head alone. The reservation is given back when the request ends, however
//! it ends.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ReadError;
use crate::metrics;

/// The shared budget. Cloning shares it.
#[derive(Debug, Clone)]
pub(crate) struct BodyBudget {
    bytes: Arc<Semaphore>,
    total: usize,
}

/// Room held by one request; given back on drop.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: BodyBudget,
    permit: Option<OwnedSemaphorePermit>,
}

impl BodyBudget {
    /// A budget of `total` bytes.
    pub(crate) fn new(total: usize) -> Self {
        Self {
            bytes: Arc::new(Semaphore::new(total.min(Semaphore::MAX_PERMITS))),
            total,
        }
    }

    /// Bytes reserved now.
    pub(crate) fn in_use(&self) -> usize {
        self.total.saturating_sub(self.bytes.available_permits())
    }

    /// Whether `bytes` more would fit now (nothing is reserved).
    pub(crate) fn has_room_for(&self, bytes: usize) -> bool {
        bytes <= self.bytes.available_permits()
    }

    /// An empty reservation, to grow as bytes arrive.
    pub(crate) fn reservation(&self) -> Reservation {
        Reservation {
            budget: self.clone(),
            permit: None,
        }
    }
}

impl Reservation {
    /// The budget this reservation is held in.
    pub(crate) fn budget(&self) -> &BodyBudget {
        &self.budget
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.permit.as_ref().map_or(0, |p| p.num_permits())
    }

    /// Grows the reservation to at least `bytes`, or fails at once without waiting.
    pub(crate) fn grow_to(&mut self, bytes: usize) -> Result<(), ReadError> {
        let more = bytes.saturating_sub(self.bytes());
        if more == 0 {
            return Ok(());
        }
        let more = u32::try_from(more).map_err(|_| ReadError::NoRoom)?;
        let extra = Arc::clone(&self.budget.bytes)
            .try_acquire_many_owned(more)
            .map_err(|_| ReadError::NoRoom)?;
        match &mut self.permit {
            Some(permit) => permit.merge(extra),
            None => self.permit = Some(extra),
        }
        metrics::gauge_body_budget_in_use(self.budget.in_use());
        Ok(())
    }

    /// Gives back all but `bytes`.
    pub(crate) fn shrink_to(&mut self, bytes: usize) {
        if let Some(permit) = &mut self.permit {
            let surplus = permit.num_permits().saturating_sub(bytes);
            drop(permit.split(surplus));
            metrics::gauge_body_budget_in_use(self.budget.in_use());
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            drop(permit);
            metrics::gauge_body_budget_in_use(self.budget.in_use());
        }
    }
}

/// Makes room in `buffer` for `more` bytes, reserving its new capacity first: `reservation`
/// is kept at `besides` plus the buffer's capacity. The capacity doubles (for amortised
/// copying) up to `ceiling` while the budget has room for that, else grows by exactly what is
/// needed, so that a buffer never holds memory the budget does not count.
pub(crate) fn grow_buffer(
    buffer: &mut Vec<u8>,
    more: usize,
    ceiling: usize,
    besides: usize,
    reservation: &mut Reservation,
) -> Result<(), ReadError> {
    let needed = buffer.len() + more;
    if needed <= buffer.capacity() {
        return Ok(());
    }
    let doubled = (2 * buffer.capacity()).min(ceiling).max(needed);
    let capacity = match reservation.grow_to(besides + doubled) {
        Ok(()) => doubled,
        Err(_) => {
            reservation.grow_to(besides + needed)?;
            needed
        }
    };
    buffer.reserve_exact(capacity - buffer.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grow_buffer_reserves_the_capacity_it_makes() {
        let budget = BodyBudget::new(10_000);
        let mut reservation = budget.reservation();
        reservation.grow_to(100).expect("room"); // held for something else
        let mut buffer = Vec::new();
        grow_buffer(&mut buffer, 300, 5000, 100, &mut reservation).expect("room");
        assert_eq!(buffer.capacity(), 300);
        buffer.extend_from_slice(&[0; 300]);
        grow_buffer(&mut buffer, 10, 5000, 100, &mut reservation).expect("room");
        assert_eq!(buffer.capacity(), 600);
        assert_eq!(
            reservation.bytes(),
            700,
            "the capacity and what was held besides"
        );
        assert!(matches!(
            grow_buffer(&mut buffer, 10_000, 20_000, 100, &mut reservation),
            Err(ReadError::NoRoom)
        ));
        assert_eq!(reservation.bytes(), 700, "nothing taken when refused");
    }

    #[test]
    fn growing_and_shrinking_moves_the_count() {
        let budget = BodyBudget::new(100);
        let mut reservation = budget.reservation();
        reservation.grow_to(60).expect("room");
        reservation.grow_to(40).expect("already held");
        assert_eq!(budget.in_use(), 60);
        assert!(matches!(reservation.grow_to(101), Err(ReadError::NoRoom)));
        reservation.shrink_to(10);
        assert_eq!(budget.in_use(), 10);
        reservation.grow_to(100).expect("room again");
        assert_eq!(budget.in_use(), 100);
    }
}
