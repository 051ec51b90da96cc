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
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::body_pace::Pace;
use crate::metrics;
use crate::routes::{BoxError, RequestBody};

/// The shared budget. Cloning shares it.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
    total: usize,
}

/// Room held by one request; given back on drop.
#[derive(Debug)]
pub struct Reservation {
    budget: BodyBudget,
    permit: Option<OwnedSemaphorePermit>,
}

/// Why a body could not be read into memory.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The body is larger than the per-request limit.
    #[error("the body is larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The budget has no room for it now.
    #[error("no room in the body budget")]
    NoRoom,
    /// The client sent its body slower than the minimum rate once the grace period was over.
    #[error("the body came too slowly: {received} bytes in {waited:?} of waiting")]
    TooSlow {
        /// Body bytes received.
        received: u64,
        /// Time spent waiting for them.
        waited: Duration,
    },
    /// The client broke off, or the framing was invalid.
    #[error("the body could not be read: {0}")]
    Broken(BoxError),
}

impl BodyBudget {
    /// A budget of `total` bytes.
    pub fn new(total: usize) -> Self {
        Self {
            bytes: Arc::new(Semaphore::new(total.min(Semaphore::MAX_PERMITS))),
            total,
        }
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
}

impl Reservation {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.permit.as_ref().map_or(0, |p| p.num_permits())
    }

    /// Grows the reservation to at least `bytes`, or fails at once without waiting.
    pub fn grow_to(&mut self, bytes: usize) -> Result<(), ReadError> {
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
    pub fn shrink_to(&mut self, bytes: usize) {
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
pub fn grow_buffer(
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

/// Reads a body of at most `limit` bytes into memory within `reservation`, each chunk
/// reserved as it arrives, at `pace`.
pub async fn read_within<B: RequestBody>(
    body: B,
    limit: usize,
    declared: Option<u64>,
    reservation: &mut Reservation,
    pace: &mut Pace,
) -> Result<Bytes, ReadError> {
    let body = std::pin::pin!(body);
    match read_up_to(body, limit, declared, reservation, pace).await? {
        Head::Whole(bytes) => Ok(bytes),
        Head::Overflow { .. } => Err(ReadError::TooLarge { limit }),
    }
}

/// What [`read_up_to`] read.
#[derive(Debug)]
pub enum Head {
    /// The whole body, within the limit.
    Whole(Bytes),
    /// The body goes on past the limit: the bytes read so far (within the reservation), then
    /// the chunk that crossed the limit (not reserved). Nothing is read when the declared
    /// length is over the limit. The rest is still in the body.
    Overflow {
        /// The bytes before the chunk that crossed the limit.
        head: Bytes,
        /// The chunk that crossed the limit.
        crossing: Bytes,
    },
}

/// Reads a body into memory within `reservation` until its end or until it goes past `limit`
/// bytes, leaving the rest in `body`: each chunk is reserved before it is kept (see
/// [`grow_buffer`]); a declared length is only a ceiling for the buffer, and one the budget
/// has no room for now is refused before anything is read.
pub async fn read_up_to<B: RequestBody>(
    mut body: std::pin::Pin<&mut B>,
    limit: usize,
    declared: Option<u64>,
    reservation: &mut Reservation,
    pace: &mut Pace,
) -> Result<Head, ReadError> {
    let ceiling = match declared {
        Some(length) => {
            let length = usize::try_from(length).unwrap_or(usize::MAX);
            if length > limit {
                return Ok(Head::Overflow {
                    head: Bytes::new(),
                    crossing: Bytes::new(),
                });
            }
            if !reservation.budget.has_room_for(length) {
                return Err(ReadError::NoRoom);
            }
            length
        }
        None => limit,
    };
    let besides = reservation.bytes();
    // With a declared length the buffer is allocated once at that length: memory the process
    // only touches as bytes arrive (the pages of a large allocation are mapped, not resident),
    // so the budget counts what arrived, and no smaller buffers are left behind by doubling.
    let mut buffer = Vec::with_capacity(if declared.is_some() { ceiling } else { 0 });
    while let Some(data) = pace.next_data(body.as_mut()).await? {
        if buffer.len() + data.len() > limit {
            return Ok(Head::Overflow {
                head: Bytes::from(buffer),
                crossing: data,
            });
        }
        if declared.is_some() && buffer.len() + data.len() <= buffer.capacity() {
            reservation.grow_to(besides + buffer.len() + data.len())?;
        } else {
            grow_buffer(&mut buffer, data.len(), ceiling, besides, reservation)?;
        }
        buffer.extend_from_slice(&data);
    }
    Ok(Head::Whole(Bytes::from(buffer)))
}

/// What a body being read may hold in its connection's read buffer (hyper's, at most
/// HTTP1_MAX_BUF_SIZE; an h2 stream's window is as large), beyond what was read: reserved by
/// the route from before the first byte is read until the body has been.
pub const READ_BUFFER_ALLOWANCE: usize = webhook_shared::server::HTTP1_MAX_BUF_SIZE;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body_pace::MinRate;
    use http_body_util::{Full, StreamBody};
    use hyper::body::Frame;

    fn chunked(chunks: usize, size: usize) -> impl RequestBody {
        let frames = (0..chunks)
            .map(move |_| Ok::<_, std::io::Error>(Frame::data(Bytes::from(vec![b'x'; size]))));
        StreamBody::new(tokio_stream::iter(frames))
    }

    /// `chunks` chunks of `size` bytes, then a body that never ends (a stalled client).
    fn stalling(chunks: usize, size: usize) -> impl RequestBody {
        let frames = (0..chunks)
            .map(move |_| Ok::<_, std::io::Error>(Frame::data(Bytes::from(vec![b'x'; size]))));
        StreamBody::new(tokio_stream::StreamExt::chain(
            tokio_stream::iter(frames),
            tokio_stream::pending(),
        ))
    }

    async fn read(
        body: impl RequestBody,
        limit: usize,
        declared: Option<u64>,
        reservation: &mut Reservation,
    ) -> Result<Bytes, ReadError> {
        let mut pace = Pace::new(MinRate::OFF);
        read_within(body, limit, declared, reservation, &mut pace).await
    }

    #[tokio::test]
    async fn a_declared_length_is_not_reserved_before_its_bytes_arrive() {
        let budget = BodyBudget::new(1000);
        let mut stalled = budget.reservation();
        // Declares 900 bytes, sends 100, then stalls: it holds 100.
        let reading = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            read(stalling(1, 100), 1000, Some(900), &mut stalled),
        )
        .await;
        assert!(reading.is_err(), "still waiting for the rest");
        assert_eq!(budget.in_use(), 100, "only what arrived");
        // So another body of 800 still fits beside it.
        let mut second = budget.reservation();
        let body = read(
            Full::new(Bytes::from(vec![b'a'; 800])),
            1000,
            Some(800),
            &mut second,
        )
        .await
        .expect("fits");
        assert_eq!(body.len(), 800);
        assert_eq!(budget.in_use(), 900);
        drop((stalled, second));
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn a_declared_length_the_budget_has_no_room_for_is_refused_unread() {
        let budget = BodyBudget::new(1000);
        let mut first = budget.reservation();
        first.grow_to(600).expect("room");
        let mut second = budget.reservation();
        let refused = read(stalling(0, 0), 1000, Some(600), &mut second).await;
        assert!(matches!(refused, Err(ReadError::NoRoom)), "{refused:?}");
        assert_eq!(second.bytes(), 0, "a refused request holds nothing");
    }

    #[tokio::test]
    async fn chunks_are_reserved_as_they_come() {
        let budget = BodyBudget::new(250);
        let mut reservation = budget.reservation();
        let refused = read(chunked(3, 100), 1000, None, &mut reservation).await;
        assert!(matches!(refused, Err(ReadError::NoRoom)), "{refused:?}");
        assert_eq!(reservation.bytes(), 200, "the chunks read so far");
        drop(reservation);
        let mut reservation = budget.reservation();
        let body = read(chunked(2, 100), 1000, None, &mut reservation)
            .await
            .expect("fits");
        assert_eq!(body.len(), 200);
    }

    #[tokio::test]
    async fn the_buffer_never_holds_more_than_is_reserved() {
        // 1000 one-byte chunks: the capacity doubles, and the reservation follows it.
        let budget = BodyBudget::new(1 << 20);
        let mut reservation = budget.reservation();
        let body = read(chunked(1000, 1), 4096, None, &mut reservation)
            .await
            .expect("fits");
        assert_eq!(body.len(), 1000);
        assert_eq!(reservation.bytes(), 1024, "doubled from 1 to 1024");
        // Near the budget's end it grows by exactly what arrives instead of doubling.
        let budget = BodyBudget::new(1500);
        let mut reservation = budget.reservation();
        let body = read(chunked(1400, 1), 4096, None, &mut reservation)
            .await
            .expect("fits exactly");
        assert_eq!(body.len(), 1400);
        assert_eq!(reservation.bytes(), 1400, "not 2048");
        // And never past a declared length.
        let budget = BodyBudget::new(1 << 20);
        let mut reservation = budget.reservation();
        read(chunked(700, 1), 4096, Some(700), &mut reservation)
            .await
            .expect("fits");
        assert_eq!(reservation.bytes(), 700, "capped at the declared 700");
    }

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

    #[tokio::test]
    async fn the_per_request_limit_comes_first() {
        let budget = BodyBudget::new(10_000);
        let mut reservation = budget.reservation();
        let declared = read(Full::new(Bytes::new()), 100, Some(101), &mut reservation).await;
        assert!(matches!(declared, Err(ReadError::TooLarge { limit: 100 })));
        let streamed = read(chunked(3, 40), 100, None, &mut reservation).await;
        assert!(matches!(streamed, Err(ReadError::TooLarge { limit: 100 })));
        assert!(reservation.bytes() <= 100);
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
