//! Reading a body into memory up to a limit, within the request's [`Reservation`] and at
//! its [`Pace`]: the whole body, or (past the limit) what was read so far with the rest left
//! in the body, for the S3 path to stream.

use bytes::Bytes;

use super::budget::{Reservation, grow_buffer};
use super::pace::Pace;
use super::{ReadError, RequestBody};

/// What [`read_up_to`] read.
#[derive(Debug)]
pub(crate) enum Head {
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
pub(crate) async fn read_up_to<B: RequestBody>(
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
            if !reservation.budget().has_room_for(length) {
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
pub(crate) const READ_BUFFER_ALLOWANCE: usize = webhook_shared::server::HTTP1_MAX_BUF_SIZE;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::budget::body_budget;
    use crate::body::pace::MinRate;
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

    async fn read_head(
        body: impl RequestBody,
        limit: usize,
        declared: Option<u64>,
        reservation: &mut Reservation,
    ) -> Result<Head, ReadError> {
        let mut pace = Pace::new(MinRate::OFF);
        let body = std::pin::pin!(body);
        read_up_to(body, limit, declared, reservation, &mut pace).await
    }

    /// Reads a body expected within the limit.
    async fn read(
        body: impl RequestBody,
        limit: usize,
        declared: Option<u64>,
        reservation: &mut Reservation,
    ) -> Result<Bytes, ReadError> {
        match read_head(body, limit, declared, reservation).await? {
            Head::Whole(bytes) => Ok(bytes),
            Head::Overflow { .. } => panic!("the body went past the limit of {limit} bytes"),
        }
    }

    #[tokio::test]
    async fn a_declared_length_is_not_reserved_before_its_bytes_arrive() {
        let budget = body_budget(1000);
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
        let budget = body_budget(1000);
        let mut first = budget.reservation();
        first.grow_to(600).expect("room");
        let mut second = budget.reservation();
        let refused = read(stalling(0, 0), 1000, Some(600), &mut second).await;
        assert!(matches!(refused, Err(ReadError::NoRoom)), "{refused:?}");
        assert_eq!(second.bytes(), 0, "a refused request holds nothing");
    }

    #[tokio::test]
    async fn chunks_are_reserved_as_they_come() {
        let budget = body_budget(250);
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
        let budget = body_budget(1 << 20);
        let mut reservation = budget.reservation();
        let body = read(chunked(1000, 1), 4096, None, &mut reservation)
            .await
            .expect("fits");
        assert_eq!(body.len(), 1000);
        assert_eq!(reservation.bytes(), 1024, "doubled from 1 to 1024");
        // Near the budget's end it grows by exactly what arrives instead of doubling.
        let budget = body_budget(1500);
        let mut reservation = budget.reservation();
        let body = read(chunked(1400, 1), 4096, None, &mut reservation)
            .await
            .expect("fits exactly");
        assert_eq!(body.len(), 1400);
        assert_eq!(reservation.bytes(), 1400, "not 2048");
        // And never past a declared length.
        let budget = body_budget(1 << 20);
        let mut reservation = budget.reservation();
        read(chunked(700, 1), 4096, Some(700), &mut reservation)
            .await
            .expect("fits");
        assert_eq!(reservation.bytes(), 700, "capped at the declared 700");
    }

    #[tokio::test]
    async fn the_per_request_limit_comes_first() {
        let budget = body_budget(10_000);
        let mut reservation = budget.reservation();
        let declared = read_head(Full::new(Bytes::new()), 100, Some(101), &mut reservation).await;
        assert!(
            matches!(&declared, Ok(Head::Overflow { head, crossing }) if head.is_empty() && crossing.is_empty()),
            "nothing read: {declared:?}"
        );
        let streamed = read_head(chunked(3, 40), 100, None, &mut reservation).await;
        assert!(
            matches!(&streamed, Ok(Head::Overflow { head, crossing }) if head.len() == 80 && crossing.len() == 40),
            "{streamed:?}"
        );
        assert!(reservation.bytes() <= 100);
    }
}
