//! Per-source quotas in the real ingest against LocalStack: beyond its source's quota a
//! webhook gets 429 with `Retry-After` before its body is read, nothing of it is enqueued,
//! the refusal is counted by source, and another source is not held back.

use e2e_tests::TestStack;
use e2e_tests::report::counter;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_beyond_its_quota_gets_429_and_nothing_of_it_is_enqueued() {
    let stack = TestStack::new("quotas").await;
    let sources = std::env::temp_dir().join(format!("quotas-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(
        &sources,
        "[sources.flood]\nscheme = \"none\"\nquota = { per_second = 0.2, burst = 2 }\n\
         [sources.quiet]\nscheme = \"none\"\n",
    )
    .expect("writing the sources file");
    let ingest = stack
        .spawn_ingest(&[("SOURCES_FILE", sources.to_str().expect("utf-8 path"))])
        .await;
    let client = reqwest::Client::new();
    let post = |source: &str| {
        client
            .post(ingest.url(&format!("/webhooks/{source}")))
            .header("content-type", "application/json")
            .body(r#"{"n":1}"#)
            .send()
    };
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(post("flood").await.expect("POST").status().as_u16());
    }
    assert_eq!(statuses, [202, 202, 429, 429]);
    let refused = post("flood").await.expect("POST");
    assert_eq!(refused.status(), 429);
    let retry_after: u32 = refused.headers()["retry-after"]
        .to_str()
        .expect("ASCII")
        .parse()
        .expect("whole seconds");
    assert!((1..=5).contains(&retry_after), "{retry_after}");
    assert_eq!(post("quiet").await.expect("POST").status(), 202);

    assert_eq!(
        stack.messages_in(&stack.queue_url).await,
        3,
        "2 flood + 1 quiet"
    );
    let metrics = ingest.metrics().await;
    assert_eq!(
        counter(
            &metrics,
            "webhook_ingest_quota_refusals_total",
            &[r#"source="flood""#]
        ),
        3.0,
        "{metrics}"
    );
    let _ = std::fs::remove_file(&sources);
    drop(ingest);
    stack.cleanup().await;
}
