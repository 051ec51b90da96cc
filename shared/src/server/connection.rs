//! Serving one accepted connection with hyper under its time limits: the service's requests
//! are tracked ([`super::activity`]), and a watcher beside the hyper connection enforces
//! the next deadline. A request head slower than the header-read timeout drops the
//! connection; a connection idle for the idle timeout (or told to drain) is closed
//! gracefully (HTTP/1.1: closed once idle; HTTP/2: GOAWAY, then closed once its streams are
//! done); one still open a linger period after that, with nothing in progress, is dropped.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::pin::pin;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Body;
use super::activity::{Expiry, Limits, TrackedBody, TrackedIo, Tracker};

/// Why a connection ended other than by the client closing it cleanly.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Closed {
    /// The client took longer than this to send a request head.
    #[error("request head not complete within {0:?}; connection dropped")]
    SlowHead(Duration),
    /// The connection was still open this long after closing began.
    #[error("still open {0:?} after closing began; connection dropped")]
    Lingered(Duration),
    /// The drain timeout passed with the connection still open.
    #[error("drain timeout passed; connection dropped")]
    Aborted,
    /// hyper's error (I/O, protocol).
    #[error(transparent)]
    Http(Box<dyn StdError + Send + Sync>),
}

/// Serves `io` with `service` until the client closes it or a limit closes it. `drain`
/// begins a graceful close; `abort` drops the connection.
pub(crate) async fn serve_connection<I, S, F>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    service: S,
    limits: Limits,
    drain: &CancellationToken,
    abort: &CancellationToken,
) -> Result<(), Closed>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Fn(Request<Incoming>) -> F + Send + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let tracker = Tracker::new();
    let mut activity = tracker.subscribe();
    let hyper_service = {
        let tracker = tracker.clone();
        hyper::service::service_fn(move |request| {
            let in_progress = tracker.request();
            let response = service(request);
            async move {
                // In progress until hyper has written the body and drops it.
                let response = response.await;
                Ok::<_, Infallible>(response.map(|body| TrackedBody::new(body, in_progress)))
            }
        })
    };
    // `tracker` stays alive here, so `activity.changed()` cannot fail while this loop runs.
    let io = TokioIo::new(TrackedIo::new(io, tracker.clone()));
    let mut connection = pin!(builder.serve_connection(io, hyper_service));
    let mut closing_since: Option<Instant> = None;
    loop {
        let deadline = activity
            .borrow_and_update()
            .deadline(&limits, closing_since);
        let expired = async {
            match deadline {
                Some((at, expiry)) => {
                    tokio::time::sleep_until(at).await;
                    expiry
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = connection.as_mut() => return result.map_err(Closed::Http),
            _ = activity.changed() => {}
            expiry = expired => match expiry {
                Expiry::SlowHead => return Err(Closed::SlowHead(limits.header_read)),
                Expiry::Linger => return Err(Closed::Lingered(limits.linger)),
                Expiry::Idle => {
                    connection.as_mut().graceful_shutdown();
                    closing_since = Some(Instant::now());
                }
            },
            () = drain.cancelled(), if closing_since.is_none() => {
                connection.as_mut().graceful_shutdown();
                closing_since = Some(Instant::now());
            }
            () = abort.cancelled() => return Err(Closed::Aborted),
        }
    }
}

#[cfg(test)]
#[path = "connection_tests.rs"]
mod tests;
