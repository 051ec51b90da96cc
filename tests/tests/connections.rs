//! ingest's connection limits, seen on the wire: a kept-alive HTTP/1.1 connection survives
//! idle gaps longer than HEADER_READ_TIMEOUT_SECONDS (a load balancer reuses it) and is closed
//! by ingest once idle for IDLE_TIMEOUT_SECONDS; headers trickled slower than the header
//! timeout are cut off; an idle HTTP/2 (h2c) connection gets GOAWAY, a used one stays usable;
//! and h2 takes as many header bytes as HTTP/1.1 does.
//!
//! The HTTP/1.1 tests speak raw bytes on one socket, and the h2 tests a few hand-made frames,
//! because a pooled client would hide which connection a request went on.

use std::time::Duration;

use e2e_tests::TestStack;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Longest any single wait in these tests may take.
const PATIENCE: Duration = Duration::from_secs(15);

fn addr_of(ingest: &e2e_tests::Service) -> String {
    ingest.url("").trim_start_matches("http://").to_owned()
}

fn post(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: ingest\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Reads one HTTP/1.1 response (headers and a Content-Length body) and returns its status
/// line, or what went wrong (`closed` when the server closed the connection first).
async fn read_response(stream: &mut TcpStream) -> Result<String, String> {
    let mut buf = Vec::new();
    let mut chunk = [0_u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match tokio::time::timeout(PATIENCE, stream.read(&mut chunk)).await {
            Err(_) => return Err("no response".to_owned()),
            Ok(Ok(0)) => return Err("closed".to_owned()),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(error)) => return Err(format!("read failed: {error}")),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match tokio::time::timeout(PATIENCE, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return Err("body cut short".to_owned()),
        }
    }
    Ok(head.lines().next().unwrap_or_default().to_owned())
}

/// Waits until the server closes `stream` (EOF or reset) and returns how long that took;
/// panics if it is still open after `limit`. Data the server sends first is skipped.
async fn wait_closed(stream: &mut TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    let mut chunk = [0_u8; 4096];
    loop {
        match tokio::time::timeout_at(start + limit, stream.read(&mut chunk)).await {
            Err(_) => panic!("connection still open after {limit:?}"),
            Ok(Ok(0) | Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connection_outlives_the_header_timeout() {
    let stack = TestStack::new("conn-keepalive").await;
    let ingest = stack
        .spawn_ingest(&[
            ("HEADER_READ_TIMEOUT_SECONDS", "1"),
            ("IDLE_TIMEOUT_SECONDS", "30"),
        ])
        .await;
    let mut stream = TcpStream::connect(addr_of(&ingest)).await.expect("connect");
    stream
        .write_all(&post("/webhooks/ka", "one"))
        .await
        .expect("send");
    let first = read_response(&mut stream).await.expect("first response");
    assert!(first.starts_with("HTTP/1.1 202"), "{first}");

    // Idle between requests for longer than the header timeout, as an ALB's pooled
    // connection is: the next request on the same connection must still be served.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stream
        .write_all(&post("/webhooks/ka", "two"))
        .await
        .expect("send");
    let second = read_response(&mut stream).await;
    assert_eq!(
        second.as_deref().map(|s| &s[..12]),
        Ok("HTTP/1.1 202"),
        "second request on the kept-alive connection: {second:?}"
    );
    assert_eq!(stack.messages_in(&stack.queue_url).await, 2);
    drop(ingest);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let stack = TestStack::new("conn-idle").await;
    let ingest = stack
        .spawn_ingest(&[
            ("HEADER_READ_TIMEOUT_SECONDS", "1"),
            ("IDLE_TIMEOUT_SECONDS", "3"),
        ])
        .await;
    // After a request: closed about IDLE_TIMEOUT_SECONDS after the response, not after the
    // header timeout.
    let mut used = TcpStream::connect(addr_of(&ingest)).await.expect("connect");
    used.write_all(&post("/webhooks/idle", "x"))
        .await
        .expect("send");
    let status = read_response(&mut used).await.expect("response");
    assert!(status.starts_with("HTTP/1.1 202"), "{status}");
    let after = wait_closed(&mut used, PATIENCE).await;
    assert!(
        after >= Duration::from_millis(2500) && after <= Duration::from_secs(6),
        "a used connection was closed {after:?} after its response; expected about 3 s"
    );

    // Without any request: a connection that never sends a byte is closed just the same.
    let mut silent = TcpStream::connect(addr_of(&ingest)).await.expect("connect");
    let after = wait_closed(&mut silent, PATIENCE).await;
    assert!(
        after >= Duration::from_millis(2500) && after <= Duration::from_secs(6),
        "a silent connection was closed after {after:?}; expected about 3 s"
    );
    drop(ingest);
    stack.cleanup().await;
}

/// Sends `head` one byte every `gap` on `stream` until the server closes it; returns how long
/// after the first byte that happened. Panics if all of `head` went out first.
async fn trickle_until_closed(stream: TcpStream, head: &[u8], gap: Duration) -> Duration {
    let (mut reader, mut writer) = stream.into_split();
    let start = Instant::now();
    let trickle = async {
        for byte in head {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(gap).await;
        }
        panic!("the whole head went out after {:?}", start.elapsed());
    };
    let closed = async {
        let mut chunk = [0_u8; 1024];
        loop {
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        () = trickle => {}
        () = closed => {}
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_trickled_slower_than_the_header_timeout_are_cut_off() {
    let stack = TestStack::new("conn-slowloris").await;
    let ingest = stack
        .spawn_ingest(&[
            ("HEADER_READ_TIMEOUT_SECONDS", "1"),
            ("IDLE_TIMEOUT_SECONDS", "30"),
        ])
        .await;
    let slow_head =
        b"POST /webhooks/slow HTTP/1.1\r\nHost: ingest\r\nX-Padding: aaaaaaaaaaaaaaaa\r\n\r\n";
    let gap = Duration::from_millis(100);

    // On a fresh connection.
    let fresh = TcpStream::connect(addr_of(&ingest)).await.expect("connect");
    let cut = trickle_until_closed(fresh, slow_head, gap).await;
    assert!(
        cut <= Duration::from_millis(2500),
        "fresh connection cut {cut:?} after its first byte"
    );

    // On a kept-alive connection that first idled past the header timeout: the clock starts
    // at the first byte of the next request, so it is not cut at once, but it is cut.
    let mut reused = TcpStream::connect(addr_of(&ingest)).await.expect("connect");
    reused
        .write_all(&post("/webhooks/slow", "ok"))
        .await
        .expect("send");
    let status = read_response(&mut reused).await.expect("response");
    assert!(status.starts_with("HTTP/1.1 202"), "{status}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let cut = trickle_until_closed(reused, slow_head, gap).await;
    assert!(
        cut >= Duration::from_millis(700) && cut <= Duration::from_millis(2500),
        "kept-alive connection cut {cut:?} after the first byte of its next request"
    );

    // An HTTP/2 preface trickled just as slowly (before ingest knows the protocol).
    let preface = TcpStream::connect(addr_of(&ingest)).await.expect("connect");
    let cut = trickle_until_closed(preface, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", gap).await;
    assert!(
        cut <= Duration::from_millis(2500),
        "slow h2 preface cut {cut:?} after its first byte"
    );
    assert_eq!(stack.messages_in(&stack.queue_url).await, 1);
    drop(ingest);
    stack.cleanup().await;
}

#[path = "connections/h2_probe.rs"]
mod h2_probe;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_h2c_connection_gets_goaway_and_a_used_one_stays_usable() {
    let stack = TestStack::new("conn-h2").await;
    let ingest = stack
        .spawn_ingest(&[
            ("HEADER_READ_TIMEOUT_SECONDS", "1"),
            ("IDLE_TIMEOUT_SECONDS", "3"),
        ])
        .await;
    let authority = addr_of(&ingest);
    let mut h2 = h2_probe::H2Probe::connect(&authority).await;
    // Used within the idle timeout (and after the header timeout): still usable.
    for (stream_id, wait) in [(1, 2000), (3, 2000)] {
        tokio::time::sleep(Duration::from_millis(wait)).await;
        h2.post(stream_id, "/webhooks/h2", b"over h2c").await;
        let answer = h2.response(stream_id).await;
        assert_eq!(answer, Ok(()), "request on stream {stream_id}");
    }
    // Then idle past it: GOAWAY, then the connection closes.
    let start = Instant::now();
    let ending = h2.until_closed(PATIENCE).await;
    let after = start.elapsed();
    assert!(ending.goaway, "no GOAWAY before the close");
    assert!(
        after >= Duration::from_millis(2500) && after <= Duration::from_secs(7),
        "idle h2 connection closed {after:?} after its last response; expected about 3 s"
    );
    assert_eq!(stack.messages_in(&stack.queue_url).await, 2);
    drop(ingest);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_takes_the_same_header_budget_as_http1() {
    let stack = TestStack::new("conn-h2-headers").await;
    let ingest = stack.spawn_ingest(&[]).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let http1 = reqwest::Client::builder()
        .http1_only()
        .build()
        .expect("client");
    // 60 headers of 260 bytes each (names and values): 15,600 bytes, under the 16 KiB
    // budget, but with HPACK's 32 bytes per field more than hyper's default 16 KiB h2
    // header list. 66 of them (17,160 bytes) are over the budget: ingest's own 431.
    let headers = |count: usize| {
        let mut map = reqwest::header::HeaderMap::new();
        for i in 0..count {
            let name =
                reqwest::header::HeaderName::try_from(format!("x-pad-{i:04}")).expect("name");
            map.insert(name, "v".repeat(250).parse().expect("value"));
        }
        map
    };
    for (client, version) in [(&http1, "HTTP/1.1"), (&h2, "h2")] {
        let under = client
            .post(ingest.url("/webhooks/big-headers"))
            .headers(headers(60))
            .body("x")
            .send()
            .await
            .expect("POST");
        assert_eq!(under.status(), 202, "{version}: headers under the budget");
        let over = client
            .post(ingest.url("/webhooks/big-headers"))
            .headers(headers(66))
            .body("x")
            .send()
            .await
            .expect("POST");
        assert_eq!(over.status(), 431, "{version}: headers over the budget");
    }
    drop(ingest);
    stack.cleanup().await;
}
