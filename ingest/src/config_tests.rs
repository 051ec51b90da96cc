//! ingest's settings as `--help` and start-up see them: defaults, ranges, the body limit with
//! and without a bucket, the minimum body rate, and errors that name the setting at fault.

use super::*;

fn parse(args: &[&str]) -> Result<Config, clap::Error> {
    let mut argv = vec![
        "ingest",
        "--queue-url",
        "http://127.0.0.1:4566/000000000000/q",
    ];
    argv.extend_from_slice(args);
    Config::try_parse_from(argv)
}

#[test]
fn default_body_limit_is_documented_figure() {
    assert_eq!(DEFAULT_MAX_BODY_BYTES, 749_568);
    let defaults = parse(&[]).expect("defaults parse");
    assert_eq!(
        defaults.max_body_bytes().expect("valid"),
        DEFAULT_MAX_BODY_BYTES
    );
    assert_eq!(
        defaults.large_payload_threshold_bytes,
        DEFAULT_MAX_BODY_BYTES
    );
}

#[test]
fn the_bucket_raises_the_body_limit_to_32_mib() {
    let offload = parse(&["--large-payload-bucket", "webhook-payloads"]).expect("parses");
    assert_eq!(offload.max_body_bytes().expect("valid"), 33_554_432);
    let given = parse(&[
        "--large-payload-bucket",
        "webhook-payloads",
        "--max-body-bytes",
        "26214400",
    ])
    .expect("parses");
    assert_eq!(given.max_body_bytes().expect("valid"), 26_214_400);
    let error = parse(&[
        "--large-payload-bucket",
        "b-1",
        "--max-body-bytes",
        "33554433",
    ])
    .expect_err("over 32 MiB")
    .to_string();
    assert!(error.contains("--max-body-bytes"), "{error}");
    for bad in ["ab", "Upper", "-start", "end.", "under_score"] {
        let error = parse(&[&format!("--large-payload-bucket={bad}")])
            .expect_err(bad)
            .to_string();
        assert!(error.contains("--large-payload-bucket"), "{error}");
    }
    let error = parse(&["--large-payload-buffer-bytes", "1048576"])
        .expect_err("under one part")
        .to_string();
    assert!(error.contains("--large-payload-buffer-bytes"), "{error}");
}

#[test]
fn bad_settings_name_themselves() {
    let error = parse(&["--max-body-bytes", "2000000"])
        .expect("parses")
        .max_body_bytes()
        .expect_err("over the SQS limit without a bucket")
        .to_string();
    assert!(error.contains("MAX_BODY_BYTES"), "{error}");
    assert!(error.contains("LARGE_PAYLOAD_BUCKET"), "{error}");
    let error = Config::try_parse_from(["ingest", "--queue-url", "not-a-url"])
        .expect_err("bad url")
        .to_string();
    assert!(error.contains("--queue-url"), "{error}");
}

#[test]
fn the_minimum_body_rate_has_its_defaults_and_refuses_a_grace_past_the_timeout() {
    let defaults = parse(&[]).expect("defaults parse");
    assert_eq!(
        defaults.min_body_rate().expect("valid"),
        MinRate {
            bytes_per_second: NonZeroU32::new(4096),
            grace: Duration::from_secs(5),
        }
    );
    let off = parse(&["--min-body-bytes-per-second", "0"]).expect("parses");
    assert_eq!(off.min_body_rate().expect("valid").bytes_per_second, None);
    let error = parse(&["--body-rate-grace-seconds", "31"])
        .expect("parses")
        .min_body_rate()
        .expect_err("longer than the body read timeout")
        .to_string();
    assert!(error.contains("BODY_RATE_GRACE_SECONDS"), "{error}");
    for (bad, name) in [
        ("--body-rate-grace-seconds=0", "--body-rate-grace-seconds"),
        (
            "--min-body-bytes-per-second=-1",
            "--min-body-bytes-per-second",
        ),
    ] {
        let error = parse(&[bad]).expect_err("out of range").to_string();
        assert!(error.contains(name), "{error}");
    }
}

#[test]
fn healthcheck_needs_no_queue_url() {
    let config = Config::try_parse_from(["ingest", "healthcheck"]).expect("parses");
    assert!(matches!(config.command, Some(Command::Healthcheck)));
    let error = Config::try_parse_from(["ingest"])
        .expect_err("serving needs the queue")
        .to_string();
    assert!(error.contains("--queue-url"), "{error}");
}

#[test]
fn clap_definition_is_consistent() {
    use clap::CommandFactory;
    Config::command().debug_assert();
}
