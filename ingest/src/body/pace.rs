//! The minimum request-body data rate (as Kestrel's `MinRequestBodyDataRate` and nginx's
//! `client_body_timeout`): after a grace period, a client must have sent on average at least
//! `MIN_BODY_BYTES_PER_SECOND` over the time ingest spent waiting for its body, or it gets
//! 408 and its connection is closed. A slow or stalled client therefore holds its connection
//! and the little it sent for seconds, not for the whole `BODY_READ_TIMEOUT_SECONDS`.
//!
//! Only time spent waiting for the client counts: while ingest itself does not read (waiting
//! for room for a part, uploading a part to S3), the clock is stopped, so backpressure never
//! makes a client look slow. No timer runs in the background: each wait for the next piece of
//! body is bounded by the moment the client would fall behind.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use tokio::time::Instant;

use super::{ReadError, RequestBody};

/// The rule: a rate and its grace period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MinRate {
    /// Bytes per second a body must average once the grace period is over; `None`: no
    /// minimum (only the body read timeout applies).
    pub bytes_per_second: Option<std::num::NonZeroU32>,
    /// Waiting time during which no rate is asked for.
    pub grace: Duration,
}

#[cfg(test)]
impl MinRate {
    /// No minimum rate (the unit tests that are not about the rate).
    pub(crate) const OFF: Self = Self {
        bytes_per_second: None,
        grace: Duration::ZERO,
    };
}

/// One request body's progress against the rule.
#[derive(Debug)]
pub(crate) struct Pace {
    rule: MinRate,
    received: u64,
    waited: Duration,
}

impl Pace {
    /// A body that has sent nothing and waited for nothing yet.
    pub(crate) fn new(rule: MinRate) -> Self {
        Self {
            rule,
            received: 0,
            waited: Duration::ZERO,
        }
    }

    /// The next piece of body data (trailers are skipped), `None` at the end; fails with
    /// [`ReadError::TooSlow`] when the client falls behind the rule while ingest waits for it.
    pub(crate) async fn next_data<B: RequestBody>(
        &mut self,
        mut body: Pin<&mut B>,
    ) -> Result<Option<Bytes>, ReadError> {
        loop {
            let started = Instant::now();
            let frame = match self.allowed_wait() {
                None => body.frame().await,
                Some(allowed) => match tokio::time::timeout(allowed, body.frame()).await {
                    Ok(frame) => frame,
                    Err(_elapsed) => {
                        self.waited += allowed;
                        return Err(self.too_slow());
                    }
                },
            };
            self.waited += started.elapsed();
            let Some(frame) = frame else {
                return Ok(None);
            };
            let frame = frame.map_err(|error| ReadError::Broken(error.into()))?;
            if let Ok(data) = frame.into_data() {
                self.received += data.len() as u64;
                return Ok(Some(data));
            }
        }
    }

    /// How much longer ingest may wait for the client before it is behind: until the waiting
    /// time reaches the grace period or the time its bytes so far pay for, whichever is later.
    fn allowed_wait(&self) -> Option<Duration> {
        let rate = self.rule.bytes_per_second?;
        let paid_for = Duration::from_secs_f64(self.received as f64 / f64::from(rate.get()));
        Some(self.rule.grace.max(paid_for).saturating_sub(self.waited))
    }

    fn too_slow(&self) -> ReadError {
        ReadError::TooSlow {
            received: self.received,
            waited: self.waited,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::num::NonZeroU32;
    use std::task::{Context, Poll};

    use hyper::body::{Body, Frame, SizeHint};

    use super::*;

    /// A body that yields `(delay, chunk)` pairs: each chunk after its delay.
    struct Timed {
        steps: VecDeque<(Duration, usize)>,
        sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    }

    impl Timed {
        fn new(steps: &[(u64, usize)]) -> Self {
            Self {
                steps: steps
                    .iter()
                    .map(|&(ms, size)| (Duration::from_millis(ms), size))
                    .collect(),
                sleep: None,
            }
        }
    }

    impl Body for Timed {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            let Some(&(delay, size)) = self.steps.front() else {
                return Poll::Ready(None);
            };
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.sleep = None;
            self.steps.pop_front();
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; size])))))
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::default()
        }
    }

    fn rule(bytes_per_second: u32, grace_seconds: u64) -> MinRate {
        MinRate {
            bytes_per_second: NonZeroU32::new(bytes_per_second),
            grace: Duration::from_secs(grace_seconds),
        }
    }

    /// Reads the whole body; gives the bytes read, or the error and when it came.
    async fn drain(rule: MinRate, body: Timed) -> Result<u64, (ReadError, Duration)> {
        let started = Instant::now();
        let mut body = std::pin::pin!(body);
        let mut pace = Pace::new(rule);
        loop {
            match pace.next_data(body.as_mut()).await {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(pace.received),
                Err(error) => return Err((error, started.elapsed())),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_is_cut_when_the_grace_period_ends() {
        // 1 KiB at once, then nothing for a minute: 1 KiB pays for 0.25 s at 4 KiB/s.
        let result = drain(rule(4096, 2), Timed::new(&[(0, 1024), (60_000, 1)])).await;
        let (error, at) = result.expect_err("too slow");
        assert!(
            matches!(error, ReadError::TooSlow { received: 1024, .. }),
            "{error:?}"
        );
        assert_eq!(at, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_sent_early_pay_for_a_later_pause() {
        // 40 KiB at once pays for 10 s at 4 KiB/s: a 9 s pause is fine, the grace is 2 s.
        let fine = drain(rule(4096, 2), Timed::new(&[(0, 40_960), (9_000, 10)])).await;
        assert_eq!(fine.expect("within the rate"), 40_970);
        let (_, at) = drain(rule(4096, 2), Timed::new(&[(0, 40_960), (11_000, 10)]))
            .await
            .expect_err("behind after 10 s");
        assert_eq!(at, Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_trickle_at_the_rate_is_never_cut() {
        // 1 KiB every 200 ms is 5 KiB/s, above 4 KiB/s, for 20 s.
        let steps: Vec<(u64, usize)> = (0..100).map(|_| (200, 1024)).collect();
        let read = drain(rule(4096, 1), Timed::new(&steps)).await;
        assert_eq!(read.expect("fast enough"), 100 * 1024);
        // 1 KiB every 500 ms is 2 KiB/s: behind once the grace is over.
        let steps: Vec<(u64, usize)> = (0..100).map(|_| (500, 1024)).collect();
        let (_, at) = drain(rule(4096, 1), Timed::new(&steps))
            .await
            .expect_err("too slow");
        assert!(at < Duration::from_secs(3), "cut at {at:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn time_ingest_spends_elsewhere_does_not_count() {
        let body = Timed::new(&[(0, 1024), (0, 1024), (1_000, 1024)]);
        let mut body = std::pin::pin!(body);
        let mut pace = Pace::new(rule(4096, 2));
        pace.next_data(body.as_mut()).await.expect("first");
        // Ingest busy elsewhere (an S3 call) for a minute: not the client's fault.
        tokio::time::sleep(Duration::from_secs(60)).await;
        pace.next_data(body.as_mut()).await.expect("second");
        pace.next_data(body.as_mut())
            .await
            .expect("third, 1 s later");
        assert_eq!(pace.received, 3 * 1024);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_rate_only_the_caller_bounds_the_wait() {
        let read = drain(MinRate::OFF, Timed::new(&[(0, 1), (600_000, 1)])).await;
        assert_eq!(read.expect("no minimum"), 2);
    }
}
