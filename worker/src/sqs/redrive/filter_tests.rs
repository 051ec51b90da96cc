use super::*;
use crate::testing::{FakeQueue, attribute, envelope, redrive_args};

fn time(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

fn facts(source: Option<&str>, reason: Option<&str>, at: Option<&str>) -> Facts {
    Facts {
        source: source.map(str::to_owned),
        reason: reason.map(str::to_owned),
        received_at: at.map(time),
    }
}

fn filter(args: &[&str]) -> Filter {
    Filter::new(&redrive_args(args)).expect("valid filters")
}

#[test]
fn facts_come_from_the_attributes_else_the_envelope_else_sent_timestamp() {
    let fake = FakeQueue::default();
    let mut event = envelope("e1");
    event.source = "from-body".to_owned();
    event.received_at = time("2024-05-01T12:00:00Z");
    let mut message = fake.message(&event.to_json());
    assert_eq!(
        Facts::of(&message),
        facts(Some("from-body"), None, Some("2024-05-01T12:00:00Z"))
    );

    message
        .attributes
        .insert("source".into(), attribute("String", "from-attribute"));
    message
        .attributes
        .insert("poison_reason".into(), attribute("String", "23514 check"));
    assert_eq!(
        Facts::of(&message),
        facts(
            Some("from-attribute"),
            Some("23514 check"),
            Some("2024-05-01T12:00:00Z")
        )
    );

    // An S3 pointer (a JSON array) or plain text: SentTimestamp, no source.
    let mut pointer = fake.message(r#"["software.amazon.payloadoffloading.PayloadS3Pointer",{}]"#);
    pointer.sent_ms = Some(1_714_564_800_000);
    assert_eq!(
        Facts::of(&pointer),
        facts(None, None, Some("2024-05-01T12:00:00Z"))
    );
    let mut text = fake.message("not json");
    text.sent_ms = None;
    assert_eq!(Facts::of(&text), facts(None, None, None));
}

#[test]
fn sources_match_any_of_those_given() {
    let by_source = filter(&["--source", "a", "--source", "b,c"]);
    assert!(by_source.matches(&facts(Some("a"), None, None)));
    assert!(by_source.matches(&facts(Some("c"), Some("x"), None)));
    assert!(!by_source.matches(&facts(Some("d"), None, None)));
    assert!(!by_source.matches(&facts(None, None, None)));
    assert!(filter(&[]).matches(&facts(None, None, None)), "no filter");
}

#[test]
fn reasons_match_by_prefix_and_max_receives_means_none() {
    let by_prefix = filter(&["--reason", "23514"]);
    assert!(by_prefix.matches(&facts(None, Some("23514 refuse_one_source"), None)));
    assert!(!by_prefix.matches(&facts(None, Some("not a valid envelope"), None)));
    assert!(!by_prefix.matches(&facts(None, None, None)));

    let max_receives = filter(&["--reason", "max-receives"]);
    assert!(max_receives.matches(&facts(Some("a"), None, None)));
    assert!(!max_receives.matches(&facts(Some("a"), Some("23514"), None)));

    let both = filter(&["--source", "a", "--reason", "max-receives"]);
    assert!(both.matches(&facts(Some("a"), None, None)));
    assert!(!both.matches(&facts(Some("b"), None, None)));
}

#[test]
fn times_include_from_and_exclude_to() {
    let window = filter(&[
        "--from",
        "2024-05-01T12:00:00Z",
        "--to",
        "2024-05-01T16:00:00+02:00",
    ]);
    assert!(window.matches(&facts(None, None, Some("2024-05-01T12:00:00Z"))));
    assert!(window.matches(&facts(None, None, Some("2024-05-01T13:59:59Z"))));
    assert!(!window.matches(&facts(None, None, Some("2024-05-01T11:59:59.999Z"))));
    assert!(!window.matches(&facts(None, None, Some("2024-05-01T14:00:00Z"))));
    assert!(
        !window.matches(&facts(None, None, None)),
        "no time, no match"
    );
    let from_only = filter(&["--from", "2024-05-01T12:00:00Z"]);
    assert!(from_only.matches(&facts(None, None, Some("2030-01-01T00:00:00Z"))));
    assert!(!from_only.matches(&facts(None, None, Some("2020-01-01T00:00:00Z"))));
}

#[test]
fn from_must_be_before_to() {
    let error = Filter::new(&redrive_args(&[
        "--from",
        "2024-05-01T12:00:00Z",
        "--to",
        "2024-05-01T12:00:00Z",
    ]))
    .expect_err("empty window");
    assert!(error.to_string().contains("--from"), "{error}");
}

#[test]
fn reason_labels_are_short_and_cut_at_a_character() {
    let long = facts(None, Some(&"€".repeat(100)), None);
    assert_eq!(long.reason_label(), format!("{}...", "€".repeat(60)));
    assert_eq!(facts(None, None, None).reason_label(), "max-receives");
    assert_eq!(facts(None, None, None).source_label(), "(none)");
}
