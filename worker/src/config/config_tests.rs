//! Settings: parsing, defaults and the checks made at start.

use super::*;

#[test]
fn clap_definition_is_consistent() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
}

#[test]
fn database_url_is_never_printed() {
    let cli = Cli::try_parse_from([
        "worker",
        "run",
        "--queue-url",
        "http://127.0.0.1:4566/000000000000/q",
        "--database-url",
        "postgres://app:hunter2@db/app",
    ])
    .expect("valid");
    assert!(!format!("{cli:?}").contains("hunter2"));
}

/// Parses `worker run` with a queue, a database and then `extra`.
fn parse_run(extra: &[&str]) -> Result<Cli, clap::Error> {
    let mut args = vec![
        "worker",
        "run",
        "--queue-url",
        "http://127.0.0.1:4566/000000000000/q",
        "--database-url",
        "postgres://db/app",
    ];
    args.extend_from_slice(extra);
    Cli::try_parse_from(args)
}

fn run_config(extra: &[&str]) -> RunConfig {
    match parse_run(extra).expect("valid").command {
        Some(Command::Run(config)) => *config,
        other => panic!("not run: {other:?}"),
    }
}

#[test]
fn values_out_of_range_are_refused_by_name() {
    let cases: [(&[&str], &str); 3] = [
        (&["--worker-concurrency", "0"], "zero is not a concurrency"),
        (
            &["--database-connection-budget", "1"],
            "a budget of 1 leaves no connection to share",
        ),
        (&["--large-payload-bucket", "No_Such"], "not a bucket name"),
    ];
    for (extra, why) in cases {
        let error = parse_run(extra).expect_err(why).to_string();
        assert!(error.contains(extra[0]), "{extra:?}: {error}");
    }
}

#[test]
fn concurrency_defaults_to_the_pool_and_may_not_exceed_it() {
    let config = run_config(&["--database-max-connections", "6"]);
    assert_eq!(config.write_limit().expect("valid"), 6);
    let error = run_config(&[
        "--database-max-connections",
        "4",
        "--worker-concurrency",
        "5",
    ])
    .write_limit()
    .expect_err("5 writes on 4 connections")
    .to_string();
    assert!(
        error.contains("WORKER_CONCURRENCY") && error.contains("DATABASE_MAX_CONNECTIONS"),
        "{error}"
    );
}

#[test]
fn a_connection_budget_is_optional_and_sets_the_lease() {
    assert_eq!(run_config(&[]).database_connection_budget, None);
    let config = run_config(&["--database-connection-budget", "8"]);
    assert_eq!(config.database_connection_budget, Some(8));
    assert_eq!(config.lease(), Duration::from_secs(10));
}

#[test]
fn the_fetch_budget_holds_a_batch_and_the_bucket_is_taken() {
    assert_eq!(
        run_config(&[]).max_fetched_bytes().expect("valid").get(),
        64 << 20
    );
    let error = run_config(&[
        "--worker-max-fetched-bytes",
        "1000",
        "--worker-batch-max-bytes",
        "2000",
    ])
    .max_fetched_bytes()
    .expect_err("a batch above the budget")
    .to_string();
    assert!(
        error.contains("WORKER_MAX_FETCHED_BYTES") && error.contains("WORKER_BATCH_MAX_BYTES"),
        "{error}"
    );
    assert_eq!(
        run_config(&["--large-payload-bucket", "webhooks-large"]).large_payload_bucket,
        Some("webhooks-large".to_owned())
    );
}

#[test]
fn the_window_is_derived_from_writers_and_batch_rows() {
    assert_eq!(run_config(&[]).max_in_flight().expect("valid"), 800);
    let small = run_config(&["--worker-concurrency", "1", "--worker-batch-max-rows", "2"]);
    assert_eq!(small.max_in_flight().expect("valid"), 10);
    let large = run_config(&["--database-max-connections", "40"]);
    assert_eq!(large.max_in_flight().expect("valid"), 1000);
    let set = run_config(&["--worker-max-in-flight", "7"]);
    assert_eq!(set.max_in_flight().expect("valid"), 7);
}

#[test]
fn session_timeouts_are_sent_unless_zero_and_the_deadline_sits_above_the_statement_timeout() {
    let defaults = run_config(&[]);
    assert_eq!(
        defaults.database.session_timeouts(),
        vec![
            ("statement_timeout", 3_000),
            ("lock_timeout", 1_000),
            ("idle_in_transaction_session_timeout", 10_000),
            ("tcp_keepalives_idle", 30),
            ("tcp_keepalives_interval", 10),
            ("tcp_keepalives_count", 3),
        ]
    );
    assert_eq!(
        defaults.database.transaction_timeout().expect("valid"),
        Duration::from_secs(4)
    );
    let proxied = run_config(&[
        "--database-statement-timeout-ms",
        "0",
        "--database-lock-timeout-ms",
        "0",
        "--database-idle-in-transaction-timeout-ms",
        "0",
        "--database-tcp-keepalive-seconds",
        "0",
    ]);
    assert!(
        proxied.database.session_timeouts().is_empty(),
        "nothing sent"
    );
    let error = run_config(&["--database-transaction-timeout-ms", "3000"])
        .database
        .transaction_timeout()
        .expect_err("not above the statement timeout")
        .to_string();
    assert!(
        error.contains("DATABASE_TRANSACTION_TIMEOUT_MS")
            && error.contains("DATABASE_STATEMENT_TIMEOUT_MS"),
        "{error}"
    );
}

#[test]
fn metrics_sources_are_source_names_and_bounded() {
    let labels = run_config(&["--metrics-sources", "github,stripe"])
        .source_labels()
        .expect("two names");
    assert_eq!(&*labels.label(Some("stripe")), "stripe");
    assert_eq!(&*labels.label(Some("acme")), "other");
    let error = parse_run(&["--metrics-sources", "github,Bad"])
        .expect_err("not a source name")
        .to_string();
    assert!(
        error.contains("--metrics-sources") && error.contains("Bad"),
        "{error}"
    );
    let many: Vec<String> = (0..=100).map(|n| format!("s{n}")).collect();
    let error = run_config(&["--metrics-sources", &many.join(",")])
        .source_labels()
        .expect_err("101 names")
        .to_string();
    assert!(error.contains("METRICS_SOURCES lists 101"), "{error}");
}
