//! What one connection is doing, as its time limits see it: how many requests are in
//! progress, since when it has been idle, and since when the head of its next request has
//! been arriving. The socket wrapper [`TrackedIo`] reports bytes read, and a [`RequestGuard`]
//! lives from the service call until hyper drops the response body (the response is
//! written), carried by [`TrackedBody`]. [`Activity::deadline`] turns that into the next time limit to enforce.
//!
//! hyper's own `header_read_timeout` cannot do this: hyper 1.x starts it when it starts
//! waiting for a request head (`Conn::poll_read_head`, which runs as soon as a kept-alive
//! connection goes idle), so it also times out connections that merely wait for their next
//! request. Here the header clock starts at the first byte of the head instead.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

/// The bytes an HTTP/2 prior-knowledge client opens with (RFC 9113 §3.4); hyper-util's
/// `auto` builder picks HTTP/2 on exactly these, HTTP/1.1 on anything else.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The connection's protocol, as far as its first bytes tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// The bytes so far are this much of the HTTP/2 preface (possibly none).
    Undecided {
        /// Preface bytes seen.
        matched: usize,
    },
    /// HTTP/1.x: bytes read while idle start a request head.
    Http1,
    /// HTTP/2: bytes read while idle are control frames (SETTINGS, PING, WINDOW_UPDATE).
    Http2,
}

/// The time limits of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// From the first byte of a request head to its end.
    pub(crate) header_read: Duration,
    /// With no request in progress and no head arriving.
    pub(crate) idle: Duration,
    /// With no request in progress, once closing has begun (idle or drain): then it is dropped.
    pub(crate) linger: Duration,
}

/// Which limit ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// A request head took longer than [`Limits::header_read`]: drop the connection.
    SlowHead,
    /// Idle for [`Limits::idle`]: begin a graceful close.
    Idle,
    /// Still open [`Limits::linger`] after closing began, with nothing in progress: drop it.
    Linger,
}

/// One connection's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Activity {
    /// Requests handed to the service whose responses are not written yet.
    pub(crate) requests: usize,
    /// When `requests` last fell to zero (or the connection was accepted).
    pub(crate) idle_since: Instant,
    /// When the first byte arrived while idle (the start of a request head), unless HTTP/2.
    pub(crate) head_since: Option<Instant>,
    /// What the first bytes said.
    pub(crate) protocol: Protocol,
}

impl Activity {
    /// A connection accepted at `now`.
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            requests: 0,
            idle_since: now,
            head_since: None,
            protocol: Protocol::Undecided { matched: 0 },
        }
    }

    /// `bytes` (not empty) were read at `now`. Returns whether the deadline may have moved.
    pub(crate) fn on_read(&mut self, bytes: &[u8], now: Instant) -> bool {
        if let Protocol::Undecided { matched } = self.protocol {
            let take = bytes.len().min(H2_PREFACE.len() - matched);
            self.protocol = if bytes[..take] != H2_PREFACE[matched..matched + take] {
                Protocol::Http1
            } else if matched + take == H2_PREFACE.len() {
                Protocol::Http2
            } else {
                Protocol::Undecided {
                    matched: matched + take,
                }
            };
        }
        if self.protocol == Protocol::Http2 {
            return self.head_since.take().is_some();
        }
        if self.requests == 0 && self.head_since.is_none() {
            self.head_since = Some(now);
            return true;
        }
        false
    }

    /// The service was called with a request (its head is complete).
    pub(crate) fn on_request_start(&mut self) {
        self.requests += 1;
        self.head_since = None;
    }

    /// A response was written (or its request abandoned) at `now`.
    pub(crate) fn on_request_end(&mut self, now: Instant) {
        self.requests = self.requests.saturating_sub(1);
        if self.requests == 0 {
            self.idle_since = now;
        }
    }

    /// The next limit to run out and when, given when closing began (if it has); `None`
    /// while a request is in progress (the service bounds those).
    pub(crate) fn deadline(
        &self,
        limits: &Limits,
        closing_since: Option<Instant>,
    ) -> Option<(Instant, Expiry)> {
        if self.requests > 0 {
            return None;
        }
        if let Some(head_since) = self.head_since {
            return Some((head_since + limits.header_read, Expiry::SlowHead));
        }
        Some(match closing_since {
            None => (self.idle_since + limits.idle, Expiry::Idle),
            Some(since) => (since.max(self.idle_since) + limits.linger, Expiry::Linger),
        })
    }
}

/// A connection's [`Activity`], shared by its socket, its service and its watcher. Only
/// changes that can move the deadline wake the watcher.
#[derive(Debug, Clone)]
pub(crate) struct Tracker(watch::Sender<Activity>);

impl Tracker {
    /// A tracker for a connection accepted now.
    pub(crate) fn new() -> Self {
        Self(watch::Sender::new(Activity::new(Instant::now())))
    }

    /// A receiver that sees the activity and is woken when the deadline may have moved.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Activity> {
        self.0.subscribe()
    }

    /// Records bytes read from the socket.
    fn read(&self, bytes: &[u8]) {
        self.0
            .send_if_modified(|activity| activity.on_read(bytes, Instant::now()));
    }

    /// Records a request handed to the service; the request counts as in progress until
    /// the returned guard is dropped.
    pub(crate) fn request(&self) -> RequestGuard {
        self.0.send_modify(Activity::on_request_start);
        RequestGuard(self.0.clone())
    }
}

/// A request in progress; dropping it ends the request.
#[derive(Debug)]
pub(crate) struct RequestGuard(watch::Sender<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0
            .send_modify(|activity| activity.on_request_end(Instant::now()));
    }
}

/// A response body that keeps its request in progress until hyper drops it. Unlike
/// `BodyExt::map_frame`, it keeps the body's exact size, so HTTP/1.1 responses keep their
/// `Content-Length` instead of turning chunked.
#[derive(Debug)]
pub(crate) struct TrackedBody<B> {
    inner: B,
    _in_progress: RequestGuard,
}

impl<B> TrackedBody<B> {
    /// `inner`, holding `in_progress`.
    pub(crate) fn new(inner: B, in_progress: RequestGuard) -> Self {
        Self {
            inner,
            _in_progress: in_progress,
        }
    }
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A socket that reports the bytes read from it to a [`Tracker`].
#[derive(Debug)]
pub(crate) struct TrackedIo<T> {
    inner: T,
    tracker: Tracker,
}

impl<T> TrackedIo<T> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: T, tracker: Tracker) -> Self {
        Self { inner, tracker }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TrackedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        let read = &buf.filled()[before..];
        if matches!(poll, Poll::Ready(Ok(()))) && !read.is_empty() {
            this.tracker.read(read);
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[path = "activity_tests.rs"]
mod tests;
