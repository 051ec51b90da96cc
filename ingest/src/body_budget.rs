//! The memory budget for request bodies: a global count of the body and message bytes that
//! requests hold at once (`MAX_IN_FLIGHT_BODY_BYTES`), so that no mix of clients, however
//! slow or hostile, can buffer more than that.
//!
//! A request reserves before it buffers: the declared `Content-Length` up front, or each chunk
//! as it arrives when there is none; then room for its SQS message while the envelope is
//! built; then only the message while it waits for SQS. A request that cannot get room is
//! refused at once (503 with `Retry-After`): it never waits for room and never buffers what it
//! could not reserve. The reservation is given back when the request ends, however it ends.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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

/// Reads a body of at most `limit` bytes into memory within `reservation`: the declared
/// length is reserved before the first byte is read, else each chunk before it is kept.
pub async fn read_within<B: RequestBody>(
    body: B,
    limit: usize,
    declared: Option<u64>,
    reservation: &mut Reservation,
) -> Result<Bytes, ReadError> {
    let body = std::pin::pin!(body);
    match read_up_to(body, limit, declared, reservation).await? {
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
/// bytes, leaving the rest in `body`: the declared length is reserved before the first byte
/// is read, else each chunk before it is kept.
pub async fn read_up_to<B: RequestBody>(
    mut body: std::pin::Pin<&mut B>,
    limit: usize,
    declared: Option<u64>,
    reservation: &mut Reservation,
) -> Result<Head, ReadError> {
    let mut buffer = match declared {
        Some(length) => {
            let length = usize::try_from(length).unwrap_or(usize::MAX);
            if length > limit {
                return Ok(Head::Overflow {
                    head: Bytes::new(),
                    crossing: Bytes::new(),
                });
            }
            reservation.grow_to(length)?;
            BytesMut::with_capacity(length)
        }
        None => BytesMut::new(),
    };
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| ReadError::Broken(error.into()))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry nothing we keep
        };
        let length = buffer.len() + data.len();
        if length > limit {
            return Ok(Head::Overflow {
                head: buffer.freeze(),
                crossing: data,
            });
        }
        reservation.grow_to(length)?;
        buffer.extend_from_slice(&data);
    }
    Ok(Head::Whole(buffer.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};
    use hyper::body::Frame;

    fn chunked(chunks: usize, size: usize) -> impl RequestBody {
        let frames = (0..chunks)
            .map(move |_| Ok::<_, std::io::Error>(Frame::data(Bytes::from(vec![b'x'; size]))));
        StreamBody::new(tokio_stream::iter(frames))
    }

    #[tokio::test]
    async fn a_declared_length_is_reserved_before_reading_and_held_until_dropped() {
        let budget = BodyBudget::new(1000);
        let mut first = budget.reservation();
        let body = read_within(
            Full::new(Bytes::from(vec![b'a'; 600])),
            700,
            Some(600),
            &mut first,
        )
        .await
        .expect("fits");
        assert_eq!(body.len(), 600);
        assert_eq!(budget.in_use(), 600);
        let mut second = budget.reservation();
        let refused = read_within(
            Full::new(Bytes::from(vec![b'a'; 600])),
            700,
            Some(600),
            &mut second,
        )
        .await;
        assert!(matches!(refused, Err(ReadError::NoRoom)), "{refused:?}");
        assert_eq!(budget.in_use(), 600, "a refused request holds nothing");
        drop(first);
        drop(second);
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn chunks_without_a_length_are_reserved_as_they_come() {
        let budget = BodyBudget::new(250);
        let mut reservation = budget.reservation();
        let refused = read_within(chunked(3, 100), 1000, None, &mut reservation).await;
        assert!(matches!(refused, Err(ReadError::NoRoom)), "{refused:?}");
        assert_eq!(reservation.bytes(), 200, "the chunks read so far");
        drop(reservation);
        let mut reservation = budget.reservation();
        let body = read_within(chunked(2, 100), 1000, None, &mut reservation)
            .await
            .expect("fits");
        assert_eq!(body.len(), 200);
    }

    #[tokio::test]
    async fn the_per_request_limit_comes_first() {
        let budget = BodyBudget::new(10_000);
        let mut reservation = budget.reservation();
        let declared = read_within(Full::new(Bytes::new()), 100, Some(101), &mut reservation).await;
        assert!(matches!(declared, Err(ReadError::TooLarge { limit: 100 })));
        let streamed = read_within(chunked(3, 40), 100, None, &mut reservation).await;
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
