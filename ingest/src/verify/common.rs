//! What the schemes share: reading headers strictly, validating event ids, parsing and
//! checking signed Unix timestamps.

use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderName};

use super::VerifyError;

/// Most signatures one request may carry; more is refused as malformed, so that a request
/// cannot make us compute thousands of checks over a large body.
pub(super) const MAX_SIGNATURES: usize = 10;

/// Longest event id kept, in bytes.
const MAX_EVENT_ID_BYTES: usize = 255;

/// Most digits in a signed Unix timestamp (seconds until the year 33658): never overflows.
const MAX_TIMESTAMP_DIGITS: usize = 12;

/// The one value of header `name`, as visible ASCII text; `Ok(None)` when absent.
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a str>, VerifyError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let malformed = |reason| VerifyError::MalformedHeader {
        header: name.clone(),
        reason,
    };
    if values.next().is_some() {
        return Err(malformed("the header is repeated"));
    }
    value
        .to_str()
        .map(Some)
        .map_err(|_| malformed("the value is not visible ASCII"))
}

/// The value of the signature header `name`, which must be present once.
pub(super) fn signature_header<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Result<&'a str, VerifyError> {
    single(headers, name)?.ok_or_else(|| VerifyError::MissingSignature {
        header: name.clone(),
    })
}

/// The value of another signed header `name`, which must be present once.
pub(super) fn required_header<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Result<&'a str, VerifyError> {
    single(headers, name)?.ok_or_else(|| VerifyError::MissingHeader {
        header: name.clone(),
    })
}

/// The event id in header `name`, when it is there once and valid (see [`event_id`]).
pub(super) fn optional_id(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    single(headers, name).ok().flatten().and_then(event_id)
}

/// `id` as an event id if it is 1 to 255 bytes of visible ASCII (`!`..=`~`), else `None`.
pub(super) fn event_id(id: &str) -> Option<String> {
    let valid =
        (1..=MAX_EVENT_ID_BYTES).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic());
    valid.then(|| id.to_owned())
}

/// A Unix timestamp in seconds written as 1 to 12 ASCII digits (no sign, no spaces).
pub(super) fn parse_unix_seconds(text: &str) -> Option<i64> {
    let valid = (1..=MAX_TIMESTAMP_DIGITS).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_digit());
    if valid { text.parse().ok() } else { None }
}

/// Refuses a signed timestamp more than `tolerance_seconds` before or after `now`.
pub(super) fn check_fresh(
    timestamp: i64,
    now: DateTime<Utc>,
    tolerance_seconds: u64,
) -> Result<(), VerifyError> {
    if now.timestamp().abs_diff(timestamp) > tolerance_seconds {
        Err(VerifyError::StaleTimestamp { tolerance_seconds })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::testing::{at, headers};

    #[test]
    fn event_ids_are_visible_ascii_up_to_255_bytes() {
        assert_eq!(event_id("evt_1").as_deref(), Some("evt_1"));
        assert_eq!(event_id(&"a".repeat(255)).map(|id| id.len()), Some(255));
        for invalid in [
            "",
            "a b",
            "caf\u{e9}",
            "tab\there",
            "nul\0",
            &"a".repeat(256),
        ] {
            assert_eq!(event_id(invalid), None, "{invalid:?}");
        }
    }

    #[test]
    fn timestamps_are_plain_digits() {
        assert_eq!(parse_unix_seconds("1614265330"), Some(1_614_265_330));
        assert_eq!(parse_unix_seconds("0"), Some(0));
        for invalid in ["", "-1", "+1", " 1", "1.5", "1e9", "9999999999999", "１"] {
            assert_eq!(parse_unix_seconds(invalid), None, "{invalid:?}");
        }
    }

    #[test]
    fn freshness_is_inclusive_both_ways() {
        let now = at(1_000_000);
        assert!(check_fresh(1_000_300, now, 300).is_ok());
        assert!(check_fresh(999_700, now, 300).is_ok());
        let stale = Err(VerifyError::StaleTimestamp {
            tolerance_seconds: 300,
        });
        assert_eq!(check_fresh(1_000_301, now, 300), stale);
        assert_eq!(check_fresh(999_699, now, 300), stale);
        assert_eq!(check_fresh(0, now, 300), stale);
    }

    #[test]
    fn repeated_or_non_ascii_headers_are_malformed() {
        let name = HeaderName::from_static("x-sig");
        let mut repeated = headers(&[("x-sig", "a")]);
        repeated.append("x-sig", http::HeaderValue::from_static("b"));
        let err = signature_header(&repeated, &name).expect_err("repeated");
        assert_eq!(err.code(), "malformed_signature_header");
        assert_eq!(optional_id(&repeated, &name), None);
        let mut binary = HeaderMap::new();
        binary.insert(
            name.clone(),
            http::HeaderValue::from_bytes(b"caf\xe9").expect("obs-text"),
        );
        let err = signature_header(&binary, &name).expect_err("binary");
        assert_eq!(err.code(), "malformed_signature_header");
        let err = signature_header(&HeaderMap::new(), &name).expect_err("absent");
        assert_eq!(err.code(), "missing_signature");
    }
}
