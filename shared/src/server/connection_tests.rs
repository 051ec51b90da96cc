//! Tests of [`super::serve_connection`]: hyper over an in-memory socket, in paused time, so
//! the limits can be checked to the millisecond without waiting for them.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Closed, serve_connection};
use crate::server::{ServeOptions, builder, text};

const REQUEST: &[u8] = b"POST /webhooks/x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi";

fn options() -> ServeOptions {
    ServeOptions {
        header_read_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(10),
        ..ServeOptions::default()
    }
}

/// One served connection: the client's end of the socket, the server task, and its tokens.
struct Served {
    client: DuplexStream,
    task: JoinHandle<Result<(), Closed>>,
    drain: CancellationToken,
    abort: CancellationToken,
}

/// Serves one in-memory connection; the service answers 202 after `service_time`.
fn serve(service_time: Duration) -> Served {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (drain, abort) = (CancellationToken::new(), CancellationToken::new());
    let options = options();
    let task = tokio::spawn({
        let (drain, abort) = (drain.clone(), abort.clone());
        async move {
            let service = move |_request| async move {
                tokio::time::sleep(service_time).await;
                text(StatusCode::ACCEPTED, "text/plain", "ok")
            };
            let builder = builder(&options);
            serve_connection(&builder, server, service, options.limits(), &drain, &abort).await
        }
    });
    Served {
        client,
        task,
        drain,
        abort,
    }
}

/// Reads one response (its body is "ok") and returns its head.
async fn response(client: &mut DuplexStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0_u8; 1024];
    while !buf.ends_with(b"\r\n\r\nok") {
        let n = client.read(&mut chunk).await.expect("read");
        assert!(n > 0, "closed before the response; got {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Waits for the server to close the connection; returns how long that took.
async fn closed(client: &mut DuplexStream) -> Duration {
    let start = Instant::now();
    let mut chunk = [0_u8; 1024];
    while client.read(&mut chunk).await.is_ok_and(|n| n > 0) {}
    start.elapsed()
}

#[tokio::test(start_paused = true)]
async fn a_kept_alive_connection_waits_past_the_header_timeout() {
    let mut served = serve(Duration::ZERO);
    served.client.write_all(REQUEST).await.expect("write");
    assert!(
        response(&mut served.client)
            .await
            .starts_with("HTTP/1.1 202")
    );
    tokio::time::sleep(Duration::from_secs(9)).await;
    served.client.write_all(REQUEST).await.expect("write");
    assert!(
        response(&mut served.client)
            .await
            .starts_with("HTTP/1.1 202")
    );
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_is_closed_at_the_idle_timeout() {
    let mut served = serve(Duration::ZERO);
    served.client.write_all(REQUEST).await.expect("write");
    response(&mut served.client).await;
    assert_eq!(closed(&mut served.client).await, Duration::from_secs(10));
    assert!(matches!(served.task.await, Ok(Ok(()))), "a graceful close");

    let mut silent = serve(Duration::ZERO);
    assert_eq!(
        closed(&mut silent.client).await,
        Duration::from_secs(10),
        "a connection that never sent a byte"
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_head_is_dropped_a_header_timeout_after_its_first_byte() {
    let served = serve(Duration::ZERO);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (mut reader, mut writer) = tokio::io::split(served.client);
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        for byte in REQUEST {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut chunk = [0_u8; 64];
    assert_eq!(reader.read(&mut chunk).await.expect("read"), 0, "no answer");
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    assert!(matches!(served.task.await, Ok(Err(Closed::SlowHead(_)))));
    trickle.abort();
}

#[tokio::test(start_paused = true)]
async fn an_idle_h2_connection_gets_goaway_and_a_used_one_stays_usable() {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let options = options();
    let (drain, abort) = (CancellationToken::new(), CancellationToken::new());
    tokio::spawn(async move {
        let service = |_request| async { text(StatusCode::ACCEPTED, "text/plain", "ok") };
        let builder = builder(&options);
        serve_connection(&builder, server, service, options.limits(), &drain, &abort).await
    });
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client))
            .await
            .expect("handshake");
    let connection = tokio::spawn(async move {
        let result = connection.await;
        (Instant::now(), result)
    });
    for _ in 0..3 {
        // Longer than the header timeout, shorter than the idle timeout.
        tokio::time::sleep(Duration::from_secs(8)).await;
        let request = Request::post("http://x/webhooks/x")
            .body(Full::new(Bytes::from_static(b"hi")))
            .expect("request");
        let response = sender.send_request(request).await.expect("still usable");
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        response.into_body().collect().await.expect("body");
    }
    let last = Instant::now();
    let (closed_at, result) = connection.await.expect("client task");
    result.expect("a clean close (GOAWAY)");
    let after = closed_at - last;
    assert!(
        after >= Duration::from_secs(10) && after < Duration::from_secs(11),
        "closed {after:?} after the last response"
    );
}

#[tokio::test(start_paused = true)]
async fn draining_lets_the_request_in_progress_finish_then_closes() {
    let mut served = serve(Duration::from_secs(3));
    served.client.write_all(REQUEST).await.expect("write");
    tokio::time::sleep(Duration::from_secs(1)).await;
    served.drain.cancel();
    let head = response(&mut served.client).await;
    assert!(head.starts_with("HTTP/1.1 202"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert_eq!(closed(&mut served.client).await, Duration::ZERO);
    assert!(matches!(served.task.await, Ok(Ok(()))));
}

#[tokio::test(start_paused = true)]
async fn aborting_drops_the_connection_at_once() {
    let mut served = serve(Duration::from_secs(60));
    served.client.write_all(REQUEST).await.expect("write");
    tokio::time::sleep(Duration::from_secs(1)).await;
    served.abort.cancel();
    assert_eq!(closed(&mut served.client).await, Duration::ZERO);
    assert!(matches!(served.task.await, Ok(Err(Closed::Aborted))));
}

#[tokio::test(start_paused = true)]
async fn an_h2_connection_buffers_no_more_unread_body_than_its_window() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const CHUNK: usize = 16 * 1024;
    let (client, server) = tokio::io::duplex(64 * 1024);
    let options = options();
    let (drain, abort) = (CancellationToken::new(), CancellationToken::new());
    tokio::spawn(async move {
        // A handler that never reads its body: every byte sent waits in h2's buffers.
        let service = |request: Request<hyper::body::Incoming>| async move {
            std::future::pending::<()>().await;
            drop(request);
            text(StatusCode::ACCEPTED, "text/plain", "ok")
        };
        let builder = builder(&options);
        serve_connection(&builder, server, service, options.limits(), &drain, &abort).await
    });
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client))
            .await
            .expect("handshake");
    tokio::spawn(connection);
    let pulled = Arc::new(AtomicUsize::new(0));
    for _ in 0..4 {
        let pulled = Arc::clone(&pulled);
        // An endless upload that counts what the client could hand to h2.
        let body = Endless {
            size: CHUNK,
            pulled,
        };
        let request = Request::post("http://x/webhooks/x")
            .body(body)
            .expect("request");
        let mut sender = sender.clone();
        tokio::spawn(async move { sender.send_request(request).await });
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let sent = pulled.load(Ordering::Relaxed);
    let window = super::super::HTTP1_MAX_BUF_SIZE;
    // Besides the window, the client holds a chunk or two per stream it may not send yet
    // (measured: 176 KiB in all; 1,136 KiB with hyper's default windows of 1 MiB).
    assert!(
        sent <= window + 8 * CHUNK,
        "{sent} bytes taken by the client for 4 unread streams (window {window})"
    );
    assert!(sent >= window / 2, "the upload started: {sent} bytes");
}

/// An endless body of `size`-byte data frames that adds each one's size to `pulled`.
struct Endless {
    size: usize,
    pulled: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl hyper::body::Body for Endless {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        self.pulled
            .fetch_add(self.size, std::sync::atomic::Ordering::Relaxed);
        let data = Bytes::from(vec![b'x'; self.size]);
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(data))))
    }
}
