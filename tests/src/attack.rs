//! A memory attack on ingest, for its test and its benchmark: many slow uploads of large
//! unsigned bodies that stop one byte before their end and hold the connection open.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Uploads in the standard flood (issue 11: 1,500).
pub const UPLOADS: usize = 1500;
/// Declared body size of each upload of the standard flood (700 KB, near `MAX_BODY_BYTES`).
pub const BODY_BYTES: usize = 700_000;
/// The documented bound on ingest's RSS under the standard flood with the default
/// `MAX_IN_FLIGHT_BODY_BYTES` (256 MiB): that budget plus a base of 96 MiB for the process
/// and its connections (hyper's read buffer, at most 64 KiB, per connection streaming a body).
pub const DEFAULT_RSS_BOUND_BYTES: u64 = (256 + 96) * 1024 * 1024;
/// The part of that base the shipped (release) binary takes idle, before any connection
/// (14.6 MiB measured in `bench.sh ingest`, 2026-12-06). The end-to-end test runs a debug
/// binary, 11 MiB larger idle and growing with every dependency, so it bounds what the flood
/// adds to the idle process: `DEFAULT_RSS_BOUND_BYTES - IDLE_RSS_ALLOWANCE_BYTES`. The
/// benchmark checks the whole bound on the release binary.
pub const IDLE_RSS_ALLOWANCE_BYTES: u64 = 16 * 1024 * 1024;

/// How the flood's uploads fared so far.
#[derive(Debug, Default)]
pub struct FloodCounts {
    /// Uploads that sent all but their last byte with no answer yet (held by ingest).
    pub holding: AtomicUsize,
    /// Uploads answered 503 (no room) before they finished.
    pub refused: AtomicUsize,
    /// Uploads answered otherwise, or cut off without an answer.
    pub other: AtomicUsize,
}

/// A running flood; [`Flood::end`] closes every connection.
#[derive(Debug)]
pub struct Flood {
    /// The counts, updated live.
    pub counts: Arc<FloodCounts>,
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

/// Raises this process's open-files limit to its hard limit (children inherit it), so that a
/// flood of connections is not cut short by the default soft limit of 1024.
pub fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

impl Flood {
    /// Starts `uploads` uploads to `url_path` on `addr` (`host:port`), each declaring
    /// `body_bytes` and sending all but the last byte in ten slow chunks over about
    /// `spread`, then holding the connection until [`Flood::end`].
    pub fn start(
        addr: &str,
        url_path: &str,
        uploads: usize,
        body_bytes: usize,
        spread: Duration,
    ) -> Self {
        let counts = Arc::new(FloodCounts::default());
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        for index in 0..uploads {
            let addr = addr.to_owned();
            let head = format!(
                "POST {url_path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\nContent-Length: {body_bytes}\r\n\r\n"
            );
            let counts = Arc::clone(&counts);
            let stop = stop.clone();
            // Spread the starts, so the uploads overlap the way slow clients do.
            let delay = spread.mul_f64(index as f64 / uploads.max(1) as f64) / 2;
            tasks.spawn(async move {
                tokio::time::sleep(delay).await;
                let outcome = stop
                    .run_until_cancelled(upload(&addr, &head, body_bytes, spread / 20))
                    .await;
                match outcome {
                    Some(Upload::Refused) => counts.refused.fetch_add(1, Ordering::Relaxed),
                    Some(Upload::Other) => counts.other.fetch_add(1, Ordering::Relaxed),
                    Some(Upload::Holding(stream)) => {
                        counts.holding.fetch_add(1, Ordering::Relaxed);
                        stop.cancelled().await;
                        drop(stream);
                        counts.holding.fetch_sub(1, Ordering::Relaxed)
                    }
                    None => 0,
                };
            });
        }
        Self {
            counts,
            stop,
            tasks,
        }
    }

    /// The standard flood: [`UPLOADS`] uploads of [`BODY_BYTES`] to an unsigned source,
    /// started over 10 s.
    pub fn start_standard(addr: &str) -> Self {
        Self::start(
            addr,
            "/webhooks/flood",
            UPLOADS,
            BODY_BYTES,
            Duration::from_secs(10),
        )
    }

    /// Uploads answered 503 so far.
    pub fn refused(&self) -> usize {
        self.counts.refused.load(Ordering::Relaxed)
    }

    /// Uploads held open by ingest now.
    pub fn holding(&self) -> usize {
        self.counts.holding.load(Ordering::Relaxed)
    }

    /// Uploads answered otherwise or cut off.
    pub fn other(&self) -> usize {
        self.counts.other.load(Ordering::Relaxed)
    }

    /// Uploads settled (held, refused or otherwise answered).
    pub fn settled(&self) -> usize {
        self.holding() + self.refused() + self.other()
    }

    /// Closes every connection of the flood and waits for the uploads to end.
    pub async fn end(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

enum Upload {
    Holding(TcpStream),
    Refused,
    Other,
}

/// One slow upload: the head, then all but the last byte in ten chunks `pause` apart,
/// watching for an early answer.
async fn upload(addr: &str, head: &str, body_bytes: usize, pause: Duration) -> Upload {
    let Ok(stream) = TcpStream::connect(addr).await else {
        return Upload::Other;
    };
    let (mut reader, mut writer) = stream.into_split();
    if writer.write_all(head.as_bytes()).await.is_err() {
        return Upload::Other;
    }
    let to_send = body_bytes.saturating_sub(1);
    let chunk = vec![b'x'; to_send.div_ceil(10).max(1)];
    let mut sent = 0;
    let mut answer = [0u8; 64];
    while sent < to_send {
        let size = chunk.len().min(to_send - sent);
        tokio::select! {
            written = writer.write_all(&chunk[..size]) => {
                if written.is_err() {
                    let read = tokio::time::timeout(Duration::from_secs(1), reader.read(&mut answer)).await;
                    return classify(read.ok().and_then(Result::ok), &answer);
                }
                sent += size;
            }
            read = reader.read(&mut answer) => return classify(read.ok(), &answer),
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            read = reader.read(&mut answer) => return classify(read.ok(), &answer),
        }
    }
    // All but the last byte is out: an answer now means ingest refused it.
    match tokio::time::timeout(Duration::from_millis(200), reader.read(&mut answer)).await {
        Ok(read) => classify(read.ok(), &answer),
        Err(_) => match reader.reunite(writer) {
            Ok(stream) => Upload::Holding(stream),
            Err(_) => Upload::Other,
        },
    }
}

fn classify(read: Option<usize>, answer: &[u8; 64]) -> Upload {
    match read {
        Some(n) if n > 0 && answer[..n].starts_with(b"HTTP/1.1 503") => Upload::Refused,
        _ => Upload::Other,
    }
}
