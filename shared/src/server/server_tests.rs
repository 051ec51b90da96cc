//! Tests of [`super::serve`] on a real loopback listener: the probe slots kept beyond the
//! connection limit.

use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::{ProbeSlots, ServeOptions, serve, text};

/// Sends `request` on a new connection and reads the answer to its end (the server closes).
async fn exchange(addr: std::net::SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("answered and closed within 5 s")
        .expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_probe_gets_in_while_clients_hold_every_slot_and_nothing_else_does() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let options = ServeOptions {
        max_connections: 1,
        probe_slots: ProbeSlots {
            connections: 1,
            paths: &["/readyz"],
        },
        ..ServeOptions::default()
    };
    let shutdown = CancellationToken::new();
    let service = |_request| async { text(StatusCode::OK, "text/plain", "ready") };
    let server = tokio::spawn(serve(listener, service, shutdown.clone(), options));
    // A client takes the only traffic slot and sends nothing.
    let _holder = TcpStream::connect(addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(100)).await;

    let probe = exchange(addr, "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(probe.starts_with("HTTP/1.1 200"), "{probe}");
    assert!(
        probe.to_ascii_lowercase().contains("connection: close"),
        "{probe}"
    );
    let webhook = exchange(
        addr,
        "POST /webhooks/x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",
    )
    .await;
    assert!(webhook.starts_with("HTTP/1.1 503"), "{webhook}");
    assert!(webhook.contains("overloaded"), "{webhook}");
    assert!(
        webhook.to_ascii_lowercase().contains("retry-after: 1"),
        "{webhook}"
    );
    shutdown.cancel();
    drop(_holder);
    server.await.expect("server task");
}
