//! Unit tests of [`super::Activity`]: protocol sniffing, the head clock, request counting and
//! the deadline each state gives; and of the tracker behind a real (in-memory) socket.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;

use super::*;

const LIMITS: Limits = Limits {
    header_read: Duration::from_secs(10),
    idle: Duration::from_secs(75),
    linger: Duration::from_secs(10),
};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn an_http2_preface_in_pieces_is_http2_and_stops_the_head_clock() {
    let t0 = Instant::now();
    let mut activity = Activity::new(t0);
    assert!(activity.on_read(b"PRI * HTTP", t0 + secs(1)));
    assert_eq!(activity.protocol, Protocol::Undecided { matched: 10 });
    assert_eq!(
        activity.deadline(&LIMITS, None),
        Some((t0 + secs(11), Expiry::SlowHead)),
        "a slow preface is a slow head"
    );
    assert!(activity.on_read(b"/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04", t0 + secs(2)));
    assert_eq!(activity.protocol, Protocol::Http2);
    assert_eq!(activity.head_since, None);
    // Frames on an idle h2 connection (pings, settings) are not request heads.
    assert!(!activity.on_read(b"\0\0\x08\x06", t0 + secs(30)));
    assert_eq!(
        activity.deadline(&LIMITS, None),
        Some((t0 + secs(75), Expiry::Idle))
    );
}

#[test]
fn anything_else_is_http1_and_starts_the_head_clock_at_its_first_byte() {
    let t0 = Instant::now();
    let mut activity = Activity::new(t0);
    assert_eq!(
        activity.deadline(&LIMITS, None),
        Some((t0 + secs(75), Expiry::Idle)),
        "before any byte the connection is idle"
    );
    assert!(activity.on_read(b"P", t0 + secs(5)));
    assert_eq!(activity.protocol, Protocol::Undecided { matched: 1 });
    assert!(!activity.on_read(b"OST / HTTP/1.1\r\n", t0 + secs(6)));
    assert_eq!(activity.protocol, Protocol::Http1);
    assert_eq!(
        activity.deadline(&LIMITS, None),
        Some((t0 + secs(15), Expiry::SlowHead)),
        "the clock runs from the first byte, not the latest"
    );
}

#[test]
fn a_kept_alive_connection_waits_idle_until_its_next_head_starts() {
    let t0 = Instant::now();
    let mut activity = Activity::new(t0);
    activity.on_read(b"POST / HTTP/1.1\r\n\r\n", t0);
    activity.on_request_start();
    assert_eq!(
        activity.deadline(&LIMITS, None),
        None,
        "request in progress"
    );
    // Body bytes while the request is in progress are not a new head.
    assert!(!activity.on_read(b"body", t0 + secs(1)));
    activity.on_request_end(t0 + secs(2));
    assert_eq!(
        activity.deadline(&LIMITS, None),
        Some((t0 + secs(77), Expiry::Idle)),
        "idle from the end of the response, for the idle timeout, not the header timeout"
    );
    assert!(activity.on_read(b"POST", t0 + secs(50)));
    assert_eq!(
        activity.deadline(&LIMITS, None),
        Some((t0 + secs(60), Expiry::SlowHead))
    );
}

#[test]
fn requests_count_up_and_down_as_h2_streams_do() {
    let t0 = Instant::now();
    let mut activity = Activity::new(t0);
    activity.on_request_start();
    activity.on_request_start();
    activity.on_request_end(t0 + secs(1));
    assert_eq!(activity.deadline(&LIMITS, None), None, "one still open");
    assert_eq!(activity.idle_since, t0, "not idle yet");
    activity.on_request_end(t0 + secs(3));
    assert_eq!(activity.idle_since, t0 + secs(3));
    assert_eq!(activity.requests, 0);
}

#[test]
fn once_closing_an_idle_connection_lingers_only_briefly() {
    let t0 = Instant::now();
    let activity = Activity::new(t0);
    assert_eq!(
        activity.deadline(&LIMITS, Some(t0 + secs(75))),
        Some((t0 + secs(85), Expiry::Linger))
    );
    let mut busy = Activity::new(t0);
    busy.on_request_start();
    assert_eq!(
        busy.deadline(&LIMITS, Some(t0)),
        None,
        "drain waits for requests"
    );
    busy.on_request_end(t0 + secs(20));
    assert_eq!(
        busy.deadline(&LIMITS, Some(t0)),
        Some((t0 + secs(30), Expiry::Linger)),
        "lingering counts from the end of the last request"
    );
}

#[tokio::test(start_paused = true)]
async fn the_tracker_sees_socket_reads_and_request_guards() {
    let tracker = Tracker::new();
    let mut activity = tracker.subscribe();
    let (mut client, server) = tokio::io::duplex(1024);
    let mut server = TrackedIo::new(server, tracker.clone());

    tokio::time::advance(secs(3)).await;
    client
        .write_all(b"GET / HTTP/1.1\r\n")
        .await
        .expect("write");
    let mut buf = [0_u8; 64];
    let n = server.read(&mut buf).await.expect("read");
    assert_eq!(n, 16);
    assert!(
        activity.has_changed().expect("open"),
        "the head start wakes the watcher"
    );
    let seen = *activity.borrow_and_update();
    assert_eq!(seen.protocol, Protocol::Http1);
    assert!(seen.head_since.is_some());

    let guard = tracker.request();
    assert_eq!(activity.borrow().requests, 1);
    assert_eq!(activity.borrow().head_since, None);
    tokio::time::advance(secs(2)).await;
    drop(guard);
    assert!(activity.has_changed().expect("open"));
    let seen = *activity.borrow_and_update();
    assert_eq!(seen.requests, 0);
    assert_eq!(seen.idle_since, Instant::now());

    server
        .write_all(b"HTTP/1.1 200 OK\r\n")
        .await
        .expect("write");
    assert!(
        !activity.has_changed().expect("open"),
        "writes are not activity"
    );
}
