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
//! it ends. The budget is `webhook_shared::byte_budget` (the worker's fetch budget is one too);
//! this module adds the body's rules on top.

use webhook_shared::byte_budget::ByteBudget;
pub(crate) use webhook_shared::byte_budget::Reservation;

use crate::body::ReadError;
use crate::metrics;

/// The shared budget of body bytes. Cloning shares it.
pub(crate) type BodyBudget = ByteBudget;

/// A budget of `total` body bytes, its use in `webhook_ingest_body_budget_in_use_bytes`.
pub(crate) fn body_budget(total: usize) -> BodyBudget {
    ByteBudget::new(total, metrics::BODY_BUDGET_IN_USE_BYTES)
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
        let budget = body_budget(10_000);
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
}
