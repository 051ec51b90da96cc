//! Unit and property tests for the envelope's wire format.

use super::*;
use proptest::prelude::*;

fn envelope(body: &[u8], content_type: Option<&str>) -> Envelope {
    Envelope {
        id: "evt_1".into(),
        source: "github".into(),
        received_at: DateTime::parse_from_rfc3339("2026-11-27T12:00:00.123456Z")
            .map(|t| t.with_timezone(&Utc))
            .expect("valid timestamp"),
        headers: BTreeMap::from([("x-github-event".into(), "push".into())]),
        content_type: content_type.map(str::to_owned),
        body: Bytes::copy_from_slice(body),
    }
}

fn wire(envelope: &Envelope) -> serde_json::Value {
    serde_json::from_str(&envelope.to_json()).expect("envelope is JSON")
}

#[test]
fn utf8_body_travels_as_text() {
    let json = wire(&envelope(br#"{"a":1}"#, Some("application/json")));
    assert_eq!(json["v"], 1);
    assert_eq!(json["body"], r#"{"a":1}"#);
    assert!(json.get("encoding").is_none());
    assert_eq!(json["received_at"], "2026-11-27T12:00:00.123456Z");
    assert_eq!(json["content_type"], "application/json");
}

#[test]
fn non_utf8_body_travels_as_base64() {
    let json = wire(&envelope(&[0xff, 0xfe, 0x00, 0x80], None));
    assert_eq!(json["encoding"], "base64");
    assert_eq!(json["body"], "//4AgA==");
    assert!(json["content_type"].is_null());
}

#[test]
fn text_that_sqs_refuses_travels_as_base64() {
    let json = wire(&envelope("a\u{FFFF}b".as_bytes(), Some("text/plain")));
    assert_eq!(json["encoding"], "base64");
}

#[test]
fn text_that_escaping_would_bloat_travels_as_base64() {
    let json = wire(&envelope(&[0x01; 300], Some("text/plain")));
    assert_eq!(json["encoding"], "base64");
    let mostly_text = wire(&envelope(b"line one\nline two\n", Some("text/plain")));
    assert!(mostly_text.get("encoding").is_none());
}

#[test]
fn unknown_version_is_rejected_by_number() {
    let mut json = wire(&envelope(b"x", None));
    json["v"] = 99.into();
    let error = Envelope::from_json(&json.to_string()).expect_err("v99 is unknown");
    assert!(
        matches!(error, DecodeError::UnsupportedVersion(99)),
        "{error}"
    );
}

#[test]
fn garbage_is_malformed() {
    assert!(matches!(
        Envelope::from_json("not json"),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        Envelope::from_json(r#"{"v":1}"#),
        Err(DecodeError::Malformed(_))
    ));
    let bad_base64 = r#"{"v":1,"id":"a","source":"s","received_at":"2026-01-01T00:00:00Z","headers":{},"body":"***","encoding":"base64"}"#;
    assert!(matches!(
        Envelope::from_json(bad_base64),
        Err(DecodeError::BadBase64(_))
    ));
}

#[test]
fn json_payload_only_for_json_content_types() {
    let body = br#"{"a":[1,"two"]}"#;
    assert_eq!(
        envelope(body, Some("application/json; charset=utf-8")).json_payload(),
        Some(serde_json::json!({"a": [1, "two"]}))
    );
    assert!(
        envelope(body, Some("application/vnd.api+json"))
            .json_payload()
            .is_some()
    );
    assert!(envelope(body, Some("text/plain")).json_payload().is_none());
    assert!(envelope(body, None).json_payload().is_none());
    assert!(
        envelope(b"{broken", Some("application/json"))
            .json_payload()
            .is_none()
    );
}

#[test]
fn json_payload_refuses_what_jsonb_cannot_hold() {
    let body = br#"{"a":"nul \u0000 inside"}"#;
    assert!(
        envelope(body, Some("application/json"))
            .json_payload()
            .is_none()
    );
}

#[test]
fn max_body_leaves_room_for_worst_case_base64() {
    let limit = max_body_for(1_048_576, 17_408);
    let body = vec![0xffu8; limit];
    let json = envelope(&body, None).to_json();
    assert!(json.len() <= 1_048_576, "{} bytes", json.len());
}

proptest! {
    #[test]
    fn any_bytes_round_trip_exactly(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let original = envelope(&body, Some("application/octet-stream"));
        let decoded = Envelope::from_json(&original.to_json()).expect("own output decodes");
        prop_assert_eq!(decoded, original);
    }

    #[test]
    fn any_text_round_trips_exactly(body in ".{0,512}") {
        let original = envelope(body.as_bytes(), Some("text/plain"));
        let decoded = Envelope::from_json(&original.to_json()).expect("own output decodes");
        prop_assert_eq!(decoded, original);
    }

    #[test]
    fn decoding_never_panics(input in ".{0,256}") {
        let _ = Envelope::from_json(&input);
    }
}

#[test]
fn a_streamed_envelope_reads_back_as_the_same_envelope() {
    let original = envelope(
        b"\xff\x00 not utf-8 \"quoted\"",
        Some("application/octet-stream"),
    );
    let streamed = StreamedEnvelope {
        source: &original.source,
        received_at: original.received_at,
        headers: &original.headers,
        content_type: original.content_type.as_deref(),
    };
    let json = format!(
        "{}{}{}",
        streamed.prefix(),
        BASE64.encode(&original.body),
        StreamedEnvelope::suffix(&original.id)
    );
    assert_eq!(Envelope::from_json(&json).expect("reads back"), original);
    assert_eq!(wire(&original)["encoding"], "base64");
}
