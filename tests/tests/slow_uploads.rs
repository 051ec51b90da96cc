//! Slow and stalled uploads (issue 18 item 7), against the real ingest with LocalStack S3 and
//! SQS: uploads with a forged signature that stall after their first KiB hold only that KiB
//! (no declared length reserved, no part buffer), so correctly signed webhooks still get 202;
//! and a client slower than `MIN_BODY_BYTES_PER_SECOND` gets 408 and is disconnected once
//! `BODY_RATE_GRACE_SECONDS` is over, while one at the rate is served. Small sizes: seconds.

use std::time::Duration;

use e2e_tests::TestStack;
use e2e_tests::large::spawn_offloading_ingest;
use e2e_tests::report::counter;
use e2e_tests::slow_uploads::{open_stalled, send_signed};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// `MAX_IN_FLIGHT_BODY_BYTES` of these tests: 8 MiB.
const BUDGET: usize = 8 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_forged_uploads_hold_no_budget_so_signed_webhooks_still_get_202() {
    let stack = TestStack::new("slow-uploads-budget").await;
    let bucket = stack.create_bucket().await;
    let budget = BUDGET.to_string();
    let ingest = spawn_offloading_ingest(
        &stack,
        &bucket,
        &[
            ("MAX_IN_FLIGHT_BODY_BYTES", budget.as_str()),
            ("LARGE_PAYLOAD_BUFFER_BYTES", "5242880"), // one part
            ("MIN_BODY_BYTES_PER_SECOND", "0"),        // the budget alone must do it
        ],
    )
    .await;
    let addr = ingest.url("").trim_start_matches("http://").to_owned();
    // Two declare 2 MB (streamed to S3): reserved up front, they would take the only part
    // buffer and over 5 MiB of the budget each.
    let mut stalled = open_stalled(&addr, 2, 2_000_000, 1024).await;
    // Twelve declare 699,050 bytes (read into memory): reserved up front, they would take
    // 8,388,600 of the 8,388,608 bytes of the budget.
    stalled.extend(open_stalled(&addr, 12, BUDGET / 12, 1024).await);
    assert_eq!(stalled.len(), 14, "every stalled upload is open");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics = ingest.metrics().await;
    let in_use = counter(&metrics, "webhook_ingest_body_budget_in_use_bytes", &[]);
    // What they sent, and for each upload read into memory the 64 KiB its connection's read
    // buffer may hold (14 x 64 KiB would be 896 KiB): not their declared lengths.
    assert!(
        in_use < 1024.0 * 1024.0,
        "the stalled uploads hold {in_use} bytes of the budget"
    );
    assert_eq!(
        counter(&metrics, "webhook_ingest_part_buffers_in_use_bytes", &[]),
        0.0,
        "no part buffer is held"
    );

    let small = send_signed(&ingest, 2, 1024, Duration::from_secs(5)).await;
    let large = send_signed(&ingest, 1, 2_000_000, Duration::from_secs(20)).await;
    for signed in small.iter().chain(&large) {
        assert_eq!(signed.status, 202, "{signed:?}\n{}", ingest.log());
    }
    // The stalled uploads are still open and unanswered.
    for upload in stalled {
        let ending = upload.ending(Duration::from_millis(50)).await;
        assert_eq!(ending.status, None, "{ending:?}");
    }
    drop(ingest);
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_slower_than_the_minimum_rate_gets_408_and_is_disconnected_after_the_grace() {
    let stack = TestStack::new("slow-uploads-rate").await;
    let bucket = stack.create_bucket().await;
    let ingest = spawn_offloading_ingest(
        &stack,
        &bucket,
        &[
            ("MIN_BODY_BYTES_PER_SECOND", "4096"),
            ("BODY_RATE_GRACE_SECONDS", "1"),
            ("BODY_READ_TIMEOUT_SECONDS", "30"),
        ],
    )
    .await;
    let addr = ingest.url("").trim_start_matches("http://").to_owned();
    // Stalled after 1 KiB: one read into memory, one streaming to S3.
    let mut stalled = open_stalled(&addr, 1, 100_000, 1024).await;
    stalled.extend(open_stalled(&addr, 1, 2_000_000, 1024).await);
    // Meanwhile a client at 20 KiB/s (above the rate) sends 40 KiB over 2 s.
    let steady = tokio::spawn({
        let addr = addr.clone();
        async move {
            let mut stream = tokio::net::TcpStream::connect(&addr)
                .await
                .expect("connect");
            let head = format!(
                "POST /webhooks/steady HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 40960\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).await.expect("head");
            for _ in 0..20 {
                stream.write_all(&[b'x'; 2048]).await.expect("body");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let mut answer = vec![0u8; 256];
            let n = stream.read(&mut answer).await.expect("answer");
            String::from_utf8_lossy(&answer[..n]).into_owned()
        }
    });
    for upload in stalled {
        let ending = upload.ending(Duration::from_secs(10)).await;
        assert_eq!(ending.status, Some(408), "{ending:?}\n{}", ingest.log());
        assert!(
            ending.close && ending.closed,
            "answered and disconnected: {ending:?}"
        );
        assert!(
            ending.after >= Duration::from_millis(900) && ending.after < Duration::from_secs(5),
            "cut {:?} after its last byte, at the end of the 1 s grace, not at the 30 s body timeout",
            ending.after
        );
    }
    let steady = steady.await.expect("steady client");
    assert!(steady.starts_with("HTTP/1.1 202"), "{steady}");
    let metrics = ingest.metrics().await;
    assert_eq!(
        counter(
            &metrics,
            "webhook_ingest_body_timeouts_total",
            &[r#"reason="min_rate""#]
        ),
        2.0
    );
    drop(ingest);
    stack.cleanup().await;
}
