//! The slow-uploads attack (issue 18 item 7), for its test and its benchmark: connections that
//! send the head of a large POST with a forged GitHub signature and a little of its body, then
//! stall; and correctly signed webhooks timed while they are open.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::Service;
use crate::large::{github_request, json_body};

/// A signature of the right format that matches nothing.
const FORGED_SIGNATURE: &str =
    "sha256=0000000000000000000000000000000000000000000000000000000000000000";

/// One stalled upload: its connection, open.
#[derive(Debug)]
pub struct Stalled {
    /// The connection, after the head and the first bytes of the body.
    pub stream: TcpStream,
    /// When those were written.
    pub sent_at: Instant,
}

/// How a stalled upload ended.
#[derive(Debug, Clone)]
pub struct Ending {
    /// The status line's code, if an answer came (`None`: closed or still open).
    pub status: Option<u16>,
    /// Whether the answer said `Connection: close`.
    pub close: bool,
    /// Whether ingest closed the connection after it.
    pub closed: bool,
    /// From the last byte sent to the answer (or to the end of the wait).
    pub after: Duration,
}

/// Opens `count` uploads to `/webhooks/github` on `addr` (`host:port`), each declaring
/// `declared` bytes with a forged signature and sending `sent` bytes of it, then stalling.
/// Connections that fail are left out.
pub async fn open_stalled(addr: &str, count: usize, declared: usize, sent: usize) -> Vec<Stalled> {
    let mut opening = JoinSet::new();
    for n in 0..count {
        let head = format!(
            "POST /webhooks/github HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nX-GitHub-Event: push\r\nX-GitHub-Delivery: forged-{n}-{}\r\nX-Hub-Signature-256: {FORGED_SIGNATURE}\r\nContent-Length: {declared}\r\n\r\n",
            uuid::Uuid::new_v4()
        );
        let addr = addr.to_owned();
        opening.spawn(async move {
            let mut stream = TcpStream::connect(&addr).await.ok()?;
            stream.write_all(head.as_bytes()).await.ok()?;
            stream.write_all(&vec![b' '; sent]).await.ok()?;
            Some(Stalled {
                stream,
                sent_at: Instant::now(),
            })
        });
    }
    let mut stalled = Vec::new();
    while let Some(done) = opening.join_next().await {
        if let Ok(Some(upload)) = done {
            stalled.push(upload);
        }
    }
    stalled
}

impl Stalled {
    /// Waits up to `wait` for ingest's answer, then for it to close the connection.
    pub async fn ending(mut self, wait: Duration) -> Ending {
        let deadline = tokio::time::Instant::now() + wait;
        let mut answer = Vec::new();
        let mut buffer = [0u8; 1024];
        let mut closed = false;
        while let Ok(read) = tokio::time::timeout_at(deadline, self.stream.read(&mut buffer)).await
        {
            match read {
                Ok(0) | Err(_) => {
                    closed = true;
                    break;
                }
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
        }
        let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
        let status = text
            .strip_prefix("http/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok());
        let answered_at = Instant::now();
        Ending {
            status,
            close: text.contains("connection: close"),
            closed,
            after: answered_at.duration_since(self.sent_at),
        }
    }
}

/// A signed webhook's answer and how long it took.
#[derive(Debug, Clone, Copy)]
pub struct Signed {
    /// Its status (0: no answer within the client's timeout).
    pub status: u16,
    /// From the request to its answer.
    pub latency: Duration,
}

/// Sends `count` correctly signed GitHub webhooks of `size` bytes at once, each with its own
/// connection and a `timeout`; gives their answers.
pub async fn send_signed(
    ingest: &Service,
    count: usize,
    size: usize,
    timeout: Duration,
) -> Vec<Signed> {
    let mut sending = JoinSet::new();
    for n in 0..count {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .expect("client");
        let request = github_request(
            &client,
            ingest,
            &format!("signed-{size}-{n}-{}", uuid::Uuid::new_v4()),
            json_body(size, n as u64),
        );
        sending.spawn(async move {
            let started = Instant::now();
            let status = request.send().await.map_or(0, |r| r.status().as_u16());
            Signed {
                status,
                latency: started.elapsed(),
            }
        });
    }
    let mut answers = Vec::new();
    while let Some(done) = sending.join_next().await {
        answers.extend(done.ok());
    }
    answers
}
