//! The HTTP serving loop both binaries use (HTTP/1.1 with keep-alive and HTTP/2 over
//! cleartext, a connection cap, per-connection time limits, graceful drain) and small
//! response helpers for the SPEC's JSON error shape.
//!
//! Time limits per connection ([`connection`]): a request head must arrive within
//! `header_read_timeout` of its first byte, a connection with no request in progress is
//! closed after `idle_timeout` (longer than a load balancer's own idle timeout, so the
//! balancer never reuses a connection this side already closed), and HTTP/2 connections get
//! keep-alive pings and the stream and header limits of [`Http2Limits`].

mod activity;
mod connection;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::activity::Limits;

/// The response body type of every handler here: small, fully buffered.
pub type Body = Full<Bytes>;

/// Connection handling limits.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// Most connections open at once; further connections wait in the listen backlog.
    pub max_connections: usize,
    /// Time a client has from the first byte of a request head to its end (slowloris
    /// guard); slower connections are dropped. It does not run while a kept-alive
    /// connection waits for its next request. Also how long a closing connection may linger.
    pub header_read_timeout: Duration,
    /// Time a connection may stay open with no request in progress before it is closed
    /// (HTTP/2: with GOAWAY). Keep it longer than the idle timeout of any load balancer in
    /// front, so the balancer closes first and never reuses a connection closed here.
    pub idle_timeout: Duration,
    /// How long open connections may finish their requests after shutdown begins.
    pub drain_timeout: Duration,
    /// HTTP/2 (h2c) limits.
    pub http2: Http2Limits,
    /// Connections accepted beyond `max_connections` for the probes alone, so that a load
    /// balancer's health check still gets in while clients hold every slot (see
    /// [`ProbeSlots`]). 0: none.
    pub probe_slots: ProbeSlots,
}

/// Connection slots kept for health checks. While every one of the `max_connections` slots
/// is taken, up to `connections` more are accepted; on those, a GET or HEAD of one of `paths`
/// is served as usual and anything else gets 503 `overloaded` with `Retry-After: 1`, every
/// answer closes the connection, and a connection gets `header_read_timeout` to send its one
/// request (not the idle timeout). A flood of clients therefore cannot make the balancer
/// think a healthy process is dead.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProbeSlots {
    /// How many.
    pub connections: usize,
    /// The probe paths served on them.
    pub paths: &'static [&'static str],
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            drain_timeout: Duration::from_secs(10),
            http2: Http2Limits::default(),
            probe_slots: ProbeSlots::default(),
        }
    }
}

impl ServeOptions {
    fn limits(&self) -> Limits {
        Limits {
            header_read: self.header_read_timeout,
            idle: self.idle_timeout,
            linger: self.header_read_timeout,
        }
    }

    /// The limits of a probe slot: no longer idle than a request head may take.
    fn probe_limits(&self) -> Limits {
        Limits {
            idle: self.header_read_timeout,
            ..self.limits()
        }
    }
}

/// Header fields an HTTP/1.1 request may have (hyper's default `max_headers`), so the most
/// HPACK's 32 bytes of overhead per field add for a request HTTP/1.1 would take.
const HTTP1_MAX_HEADERS: u32 = 100;
/// Room in the h2 header list for the pseudo-headers (`:method`, `:scheme`, `:authority`,
/// `:path`), which are not request headers.
const PSEUDO_HEADER_ROOM: u32 = 4 * 1024;

/// HTTP/2 limits. hyper has no header-read timeout for HTTP/2: a header block is bounded in
/// size by `max_header_list_size` (and h2's CONTINUATION frame cap), and in time by the idle
/// timeout (a stream only counts as a request once its headers are complete) and the
/// keep-alive pings.
///
/// Memory: h2 buffers DATA frames a handler has not read yet, up to the flow-control windows
/// it grants. The connection window caps them for all of a connection's streams together, so
/// it is set to what one HTTP/1.1 connection may buffer ([`HTTP1_MAX_BUF_SIZE`], instead of
/// hyper's 1 MiB): an h2 connection of stalled uploads holds no more unread body than an
/// HTTP/1.1 one, and whatever a handler reads counts in its own budget. Streams are capped
/// per connection, so a connection's header lists are bounded too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http2Limits {
    /// Interval of keep-alive PINGs, which find dead peers.
    pub keep_alive_interval: Duration,
    /// Time a PING may go unanswered before the connection is closed.
    pub keep_alive_timeout: Duration,
    /// Most streams (requests) open at once per connection (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub max_concurrent_streams: u32,
    /// Flow-control window of each stream: the most body bytes a client may send on one
    /// request ahead of what its handler has read.
    pub initial_stream_window_size: u32,
    /// Flow-control window of the connection: the most body bytes a client may send on all
    /// its streams together ahead of what their handlers have read.
    pub initial_connection_window_size: u32,
    /// Largest header list accepted (`SETTINGS_MAX_HEADER_LIST_SIZE`: names, values and 32
    /// bytes per field, pseudo-headers included); larger ones get 431.
    pub max_header_list_size: u32,
    /// Streams the client opened and reset before they were accepted, allowed before
    /// GOAWAY (the "rapid reset" defence, CVE-2023-44487).
    pub max_pending_accept_reset_streams: usize,
    /// Streams this side reset for the client's protocol errors, allowed before GOAWAY
    /// (RUSTSEC-2024-0003).
    pub max_local_error_reset_streams: usize,
}

impl Http2Limits {
    /// The limits for a server whose requests may carry `header_bytes` of header names and
    /// values: the h2 header list takes as much as HTTP/1.1 does, plus the pseudo-headers.
    pub const fn for_header_bytes(header_bytes: usize) -> Self {
        Self {
            keep_alive_interval: Duration::from_secs(20),
            keep_alive_timeout: Duration::from_secs(20),
            max_concurrent_streams: 32,
            initial_stream_window_size: HTTP1_MAX_BUF_SIZE as u32,
            initial_connection_window_size: HTTP1_MAX_BUF_SIZE as u32,
            max_header_list_size: header_bytes as u32 + HTTP1_MAX_HEADERS * 32 + PSEUDO_HEADER_ROOM,
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 256,
        }
    }
}

impl Default for Http2Limits {
    /// For 16 KiB of header names and values.
    fn default() -> Self {
        Self::for_header_bytes(16 * 1024)
    }
}

/// Most bytes hyper buffers per HTTP/1.1 connection (its read buffer), and the flow-control
/// windows of an HTTP/2 connection.
pub const HTTP1_MAX_BUF_SIZE: usize = 64 * 1024;

/// hyper's connection builder with `options`' protocol settings. hyper's own HTTP/1.1
/// header-read timeout is off: it would also run while a connection waits for its next
/// request ([`activity`] times request heads instead).
fn builder(options: &ServeOptions) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        // hyper's read buffer grows to ~400 KB by default while a body streams in, and
        // stays that size for the connection's life: with many slow uploads that is more
        // than the bodies themselves. 64 KiB still holds the largest request head.
        .max_buf_size(HTTP1_MAX_BUF_SIZE)
        .keep_alive(true);
    let http2 = options.http2;
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(http2.keep_alive_interval)
        .keep_alive_timeout(http2.keep_alive_timeout)
        .max_concurrent_streams(http2.max_concurrent_streams)
        .initial_stream_window_size(http2.initial_stream_window_size)
        .initial_connection_window_size(http2.initial_connection_window_size)
        .max_header_list_size(http2.max_header_list_size)
        .max_pending_accept_reset_streams(http2.max_pending_accept_reset_streams)
        .max_local_error_reset_streams(http2.max_local_error_reset_streams);
    builder
}

/// Serves `service` on `listener` until `shutdown` is cancelled, then stops accepting and
/// lets open connections finish their requests for at most `drain_timeout`.
pub async fn serve<S, F>(
    listener: TcpListener,
    service: S,
    shutdown: CancellationToken,
    options: ServeOptions,
) where
    S: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let builder = Arc::new(builder(&options));
    let tasks = TaskTracker::new();
    let abort = CancellationToken::new();
    let connections = Arc::new(Semaphore::new(options.max_connections));
    let probe_connections = Arc::new(Semaphore::new(options.probe_slots.connections));

    loop {
        // A traffic slot when there is one; else a probe slot.
        let (permit, probe_only) = tokio::select! {
            biased;
            permit = Arc::clone(&connections).acquire_owned() => match permit {
                Ok(permit) => (permit, false),
                Err(_closed) => break,
            },
            permit = Arc::clone(&probe_connections).acquire_owned() => match permit {
                Ok(permit) => (permit, true),
                Err(_closed) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Usually EMFILE or a reset before accept; back off a little and go on.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let builder = Arc::clone(&builder);
        let (drain, abort) = (shutdown.clone(), abort.clone());
        let (limits, probe_paths) = if probe_only {
            (options.probe_limits(), Some(options.probe_slots.paths))
        } else {
            (options.limits(), None)
        };
        let service = probes_only(service.clone(), probe_paths);
        tasks.spawn(async move {
            let served =
                connection::serve_connection(&builder, stream, service, limits, &drain, &abort)
                    .await;
            if let Err(error) = served {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tasks.close();
    if tokio::time::timeout(options.drain_timeout, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?options.drain_timeout, "connections still open after drain timeout; closing");
        abort.cancel();
        tasks.wait().await;
    }
}

/// `service` as is (`paths` is `None`), or for a probe slot: GET and HEAD of `paths` served by
/// `service`, anything else 503 `overloaded`; every answer closes the connection.
fn probes_only<S, F>(
    service: S,
    paths: Option<&'static [&'static str]>,
) -> impl Fn(Request<Incoming>) -> BoxedResponse + Clone + Send + Sync + 'static
where
    S: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    move |request: Request<Incoming>| {
        let Some(paths) = paths else {
            return Box::pin(service(request)) as BoxedResponse;
        };
        let is_probe = (request.method() == http::Method::GET
            || request.method() == http::Method::HEAD)
            && paths.contains(&request.uri().path());
        let answer = is_probe.then(|| service(request));
        Box::pin(async move {
            let mut response = match answer {
                Some(answer) => answer.await,
                None => {
                    let mut refused = error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "overloaded",
                        "every connection slot is taken; retry later",
                    );
                    refused
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                    refused
                }
            };
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        })
    }
}

/// A boxed response future.
type BoxedResponse = std::pin::Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The SPEC's error body: `{"error":"<machine code>","message":"<human text>"}`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json(
        status,
        &serde_json::json!({ "error": code, "message": message }),
    )
}

/// A plain-text response.
pub fn text(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
