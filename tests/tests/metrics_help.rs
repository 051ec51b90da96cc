//! `/metrics` as an operator sees it: after ingest and the worker have handled traffic, every
//! metric family either binary serves has its `# HELP` line and is one the README's metrics
//! table documents.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use e2e_tests::probes::wait_for_metrics;
use e2e_tests::report::{counter, histogram_buckets};
use e2e_tests::{Service, TestStack};

/// The README, whose "## Metrics" section documents every metric.
const README: &str = include_str!("../../README.md");

/// Webhooks posted, so that ingest batches and the worker stores.
const WEBHOOKS: usize = 20;

/// The metric names in the first column of the README's "## Metrics" table.
fn documented_metrics() -> HashSet<&'static str> {
    let section = README
        .split("\n## Metrics\n")
        .nth(1)
        .expect("the README has a ## Metrics section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let names: HashSet<&str> = section
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .collect();
    assert!(
        names.len() > 10,
        "too few metrics parsed from the README: {names:?}"
    );
    names
}

/// The names after `# <keyword> ` in a Prometheus text.
fn declared(metrics: &str, keyword: &str) -> BTreeSet<String> {
    let prefix = format!("# {keyword} ");
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .filter_map(|rest| rest.split(' ').next())
        .map(str::to_owned)
        .collect()
}

/// Each problem with one binary's `/metrics`: a family without help, a family the README does
/// not document, or a sample of no declared family.
fn problems(binary: &str, metrics: &str, documented: &HashSet<&str>) -> Vec<String> {
    let types = declared(metrics, "TYPE");
    let helps = declared(metrics, "HELP");
    let mut problems = Vec::new();
    for family in &types {
        if !helps.contains(family) {
            problems.push(format!(
                "{binary}: `# TYPE {family}` has no `# HELP {family}`"
            ));
        }
        if !documented.contains(family.as_str()) {
            problems.push(format!(
                "{binary}: {family} is not in the README's metrics table"
            ));
        }
    }
    let samples: BTreeSet<&str> = metrics
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .collect();
    for sample in samples {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| sample.strip_suffix(suffix))
            .filter(|family| types.contains(*family))
            .unwrap_or(sample);
        if !types.contains(family) {
            problems.push(format!("{binary}: sample {sample} has no `# TYPE` line"));
        }
    }
    problems
}

/// Posts `WEBHOOKS` JSON webhooks to `ingest`.
async fn post_webhooks(ingest: &Service) {
    let client = reqwest::Client::new();
    for n in 0..WEBHOOKS {
        let response = client
            .post(ingest.url("/webhooks/github"))
            .header("content-type", "application/json")
            .body(serde_json::json!({ "n": n }).to_string())
            .send()
            .await
            .expect("POST webhook");
        assert_eq!(response.status(), 202, "{:?}", response.text().await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_served_metric_has_help_and_is_documented() {
    let stack = TestStack::new("metrics_help").await;
    let ingest = stack.spawn_ingest(&[]).await;
    let worker = stack
        .spawn_worker(&[("METRICS_SOURCES", "github,stripe")])
        .await;

    post_webhooks(&ingest).await;
    stack
        .wait_for_rows(WEBHOOKS as i64, Duration::from_secs(60))
        .await;
    // The families that appear only once traffic has flowed through each binary.
    wait_for_metrics(&ingest, "ingest's batch and request metrics", |text| {
        [
            "webhook_ingest_batch_messages",
            "webhook_ingest_requests_total",
        ]
        .iter()
        .all(|name| text.contains(&format!("# TYPE {name} ")))
    })
    .await;
    wait_for_metrics(&worker, "the worker's message and queue metrics", |text| {
        [
            "webhook_worker_messages_total",
            "webhook_end_to_end_seconds",
            "webhook_worker_db_write_seconds",
            "webhook_queue_messages",
        ]
        .iter()
        .all(|name| text.contains(&format!("# TYPE {name} ")))
    })
    .await;

    let documented = documented_metrics();
    let ingest_metrics = ingest.metrics().await;
    let worker_metrics = worker.metrics().await;
    // The end-to-end latency has the fine buckets the README promises; the others the coarse.
    let bounds = |name: &str| {
        histogram_buckets(&worker_metrics, name)
            .iter()
            .map(|(le, _)| *le)
            .collect::<Vec<f64>>()
    };
    let fine = bounds("webhook_end_to_end_seconds");
    assert_eq!(
        (fine.len(), &fine[..4]),
        (35, &[0.001, 0.0015, 0.002, 0.003][..]),
        "{worker_metrics}"
    );
    assert_eq!(bounds("webhook_worker_db_write_seconds").len(), 21);
    // Per source: the listed source that sent has its own series; a listed one that did not
    // has a lag of 0; everything else is `other`.
    let per_source = |name: &str, source: &str| {
        counter(&worker_metrics, name, &[&format!(r#"source="{source}""#)])
    };
    assert_eq!(
        per_source("webhook_worker_source_message_age_seconds_count", "github"),
        WEBHOOKS as f64,
        "{worker_metrics}"
    );
    assert!(
        worker_metrics.contains(r#"webhook_worker_source_lag_seconds{source="stripe"} 0"#),
        "{worker_metrics}"
    );
    assert!(
        worker_metrics.contains(r#"webhook_worker_source_lag_seconds{source="other"}"#),
        "{worker_metrics}"
    );
    let mut found = problems("ingest", &ingest_metrics, &documented);
    found.extend(problems("worker", &worker_metrics, &documented));
    assert!(
        found.is_empty(),
        "{}\n\ningest /metrics:\n{ingest_metrics}\nworker /metrics:\n{worker_metrics}",
        found.join("\n")
    );

    drop((ingest, worker));
    stack.cleanup().await;
}

#[test]
fn the_check_catches_missing_help_and_undocumented_families() {
    let documented = HashSet::from(["webhook_ingest_batch_messages", "webhook_a_total"]);
    let served = "# TYPE webhook_ingest_batch_messages histogram\n\
        webhook_ingest_batch_messages_bucket{le=\"1\"} 1\n\
        webhook_ingest_batch_messages_sum 1\n\
        webhook_ingest_batch_messages_count 1\n\
        # HELP webhook_b_total Bs.\n\
        # TYPE webhook_b_total counter\n\
        webhook_b_total 1\n\
        webhook_c 1\n";
    assert_eq!(
        problems("ingest", served, &documented),
        [
            "ingest: webhook_b_total is not in the README's metrics table",
            "ingest: `# TYPE webhook_ingest_batch_messages` has no `# HELP webhook_ingest_batch_messages`",
            "ingest: sample webhook_c has no `# TYPE` line",
        ]
    );
    let fixed = format!("# HELP webhook_ingest_batch_messages Messages per call.\n{served}");
    assert_eq!(problems("ingest", &fixed, &documented).len(), 2);
}
