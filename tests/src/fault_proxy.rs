//! A TCP proxy in front of an HTTP service (LocalStack's S3) that a test can freeze or make
//! fail, to fault S3 for one process while SQS, on the same LocalStack, stays healthy: point
//! the binary at it with `AWS_ENDPOINT_URL_S3` ([`FaultProxy::url`]) and keep
//! `AWS_ENDPOINT_URL` direct.
//!
//! Modes, switched at any time with [`FaultProxy::set`]:
//! - [`Fault::None`]: bytes are forwarded both ways.
//! - [`Fault::Freeze`]: connections are accepted and what they send is read and held (never
//!   forwarded, never answered), as when the service hangs.
//! - [`Fault::Error`]: each request is read (head and `Content-Length` body) and answered
//!   `503 Slow Down` with S3's XML error, then the connection is closed.
//! - [`Fault::Throttle`]: likewise, answered as SQS (JSON protocol) throttles:
//!   `400` with `ThrottlingException`.
//!
//! Leaving [`Fault::None`] closes the connections being forwarded, so that pooled keep-alive
//! connections cannot slip past the fault.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Longest request head read in [`Fault::Error`] mode.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// S3's answer when it sheds load: retried by the SDKs, then given up on.
const SLOW_DOWN: &str = "HTTP/1.1 503 Slow Down\r\ncontent-type: application/xml\r\nconnection: close\r\ncontent-length: 120\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";

/// SQS's answer when it throttles (JSON protocol, with the query-compatible error header).
const THROTTLED: &str = "HTTP/1.1 400 Bad Request\r\ncontent-type: application/x-amz-json-1.0\r\nx-amzn-query-error: ThrottlingException;Sender\r\nconnection: close\r\ncontent-length: 76\r\n\r\n{\"__type\":\"com.amazonaws.sqs#ThrottlingException\",\"message\":\"Rate exceeded\"}";

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward.
    None,
    /// Accept and hold: nothing forwarded, nothing answered.
    Freeze,
    /// Answer every request 503 SlowDown.
    Error,
    /// Answer every request as a throttling SQS would.
    Throttle,
}

/// The proxy, on a free 127.0.0.1 port. Stops when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    fault: watch::Sender<Fault>,
    connections: Arc<AtomicUsize>,
    accept_loop: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts forwarding to `upstream` (`host:port`, or a URL such as
    /// `http://127.0.0.1:4566`).
    pub async fn start(upstream: &str) -> Self {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the fault proxy");
        let addr = listener.local_addr().expect("proxy address");
        let fault = watch::Sender::new(Fault::None);
        let connections = Arc::new(AtomicUsize::new(0));
        let (watcher, counter) = (fault.subscribe(), Arc::clone(&connections));
        let accept_loop = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(serve(client, upstream.clone(), watcher.clone()));
            }
        });
        Self {
            addr,
            fault,
            connections,
            accept_loop,
        }
    }

    /// The endpoint URL to give a client, e.g. as `AWS_ENDPOINT_URL_S3`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Switches the mode for new requests (and closes forwarded connections when leaving
    /// [`Fault::None`]).
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    /// Connections accepted so far (whatever the mode).
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept_loop.abort();
        // Forwarded connections end on this change, held ones when the sender drops next.
        self.fault.send_replace(Fault::Freeze);
    }
}

/// Handles one client connection in the mode current when it arrived.
async fn serve(mut client: TcpStream, upstream: String, mut fault: watch::Receiver<Fault>) {
    let mode = *fault.borrow_and_update();
    match mode {
        Fault::None => {
            let Ok(mut server) = TcpStream::connect(&upstream).await else {
                return;
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                _ = fault.wait_for(|fault| *fault != Fault::None) => {}
            }
        }
        Fault::Freeze => {
            let mut sink = vec![0_u8; 64 * 1024];
            loop {
                tokio::select! {
                    read = client.read(&mut sink) => {
                        if matches!(read, Ok(0) | Err(_)) {
                            return;
                        }
                    }
                    changed = fault.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                }
            }
        }
        Fault::Error | Fault::Throttle => {
            let answer = if mode == Fault::Error {
                SLOW_DOWN
            } else {
                THROTTLED
            };
            if read_request(&mut client).await.is_some() {
                let _ = client.write_all(answer.as_bytes()).await;
                let _ = client.shutdown().await;
            }
        }
    }
}

/// Reads one request's head and its `Content-Length` body; `None` if the client went away.
async fn read_request(client: &mut TcpStream) -> Option<()> {
    let mut head = Vec::new();
    let mut buffer = vec![0_u8; 64 * 1024];
    let end = loop {
        let read = client.read(&mut buffer).await.ok()?;
        if read == 0 {
            return None;
        }
        head.extend_from_slice(&buffer[..read]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if head.len() > MAX_HEAD_BYTES {
            return Some(());
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
    let length: usize = text
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    let mut left = length.saturating_sub(head.len() - end);
    while left > 0 {
        let read = client.read(&mut buffer).await.ok()?;
        if read == 0 {
            return None;
        }
        left = left.saturating_sub(read);
    }
    Some(())
}
