//! `worker maintain` with `EXPORT_BUCKET`, against real PostgreSQL and LocalStack's S3: an
//! expired partition is exported (JSON Lines, gzip, one object) and checked before it is
//! dropped (a body that is not UTF-8 comes back byte for byte); a bucket that does not
//! exist stops the run at start, before anything is detached.

use std::io::Read as _;
use std::time::Duration;

use base64::Engine as _;
use chrono::{Days, Utc};
use e2e_tests::TestStack;
use e2e_tests::probes::DRAIN_TIMEOUT;
use webhook_shared::envelope::Envelope;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_partitions_are_exported_and_checked_before_the_drop() {
    let stack = TestStack::new("retention-export").await;
    let worker = stack.spawn_worker(&[]).await;
    let received = Utc::now() - Days::new(100);
    let mut old = TestStack::envelopes("old", 25);
    for envelope in &mut old {
        envelope.received_at = received;
    }
    // A body that is not UTF-8 comes back byte for byte.
    old[0].content_type = Some("application/octet-stream".to_owned());
    old[0].body = bytes::Bytes::from_static(&[0xff, 0x00, 0xfe, b'\n', b'"']);
    let mut all = old.clone();
    all.extend(TestStack::envelopes("new", 5));
    stack
        .send_raw(
            &stack.queue_url,
            all.iter().map(Envelope::to_json).collect(),
        )
        .await;
    stack.wait_for_rows(30, DRAIN_TIMEOUT).await;
    worker.terminate(Duration::from_secs(30)).await;
    let partition = format!("webhook_events_p{}", received.format("%Y%m%d"));

    // No such bucket: the run stops at start, naming the setting; nothing is detached.
    let missing = format!("{}-missing", stack.name);
    let (status, log) = stack
        .run_worker_command(
            &["maintain"],
            &[("RETENTION", "90d"), ("EXPORT_BUCKET", &missing)],
        )
        .await;
    assert!(!status.success(), "the export cannot succeed: {log}");
    assert!(log.contains("EXPORT_BUCKET"), "{log}");
    let attached: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT FROM pg_inherits WHERE inhrelid = to_regclass($1))",
    )
    .bind(&partition)
    .fetch_one(&stack.db)
    .await
    .expect("reading pg_inherits");
    assert!(attached, "{partition} still attached");

    let bucket = stack.create_bucket().await;
    let (status, log) = stack
        .run_worker_command(
            &["maintain"],
            &[
                ("RETENTION", "90d"),
                ("EXPORT_BUCKET", &bucket),
                ("EXPORT_PREFIX", "archive/"),
            ],
        )
        .await;
    assert!(status.success(), "maintain failed: {log}");
    assert!(!stack.table_exists(&partition).await, "{partition} dropped");
    let key = format!(
        "archive/webhook_events/{}/{partition}.jsonl.gz",
        received.format("%Y/%m")
    );
    let object = stack
        .object(&bucket, &key)
        .await
        .unwrap_or_else(|| panic!("s3://{bucket}/{key}"));
    let mut text = String::new();
    flate2::read::GzDecoder::new(object.as_ref())
        .read_to_string(&mut text)
        .expect("gzip of UTF-8 text");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 25);
    for envelope in &old {
        let line = lines
            .iter()
            .find(|line| line["id"] == envelope.id.as_str())
            .unwrap_or_else(|| panic!("{} exported", envelope.id));
        assert_eq!(line["source"], "old");
        let body = base64::engine::general_purpose::STANDARD
            .decode(line["body_base64"].as_str().expect("a base64 body"))
            .expect("base64");
        assert_eq!(body, envelope.body.as_ref());
    }
    assert_eq!(stack.stored_count().await, 5, "today's rows stay");
    stack.cleanup().await;
}
