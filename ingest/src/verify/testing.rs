//! Helpers for the verification tests.

use chrono::{DateTime, TimeZone as _, Utc};
use http::{HeaderMap, HeaderName, HeaderValue};
use secrecy::SecretString;

/// A header map from `(name, value)` pairs.
pub(super) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("test header name"),
            HeaderValue::from_str(value).expect("test header value"),
        );
    }
    map
}

/// Secrets from plain strings.
pub(super) fn secrets(values: &[&str]) -> Vec<SecretString> {
    values
        .iter()
        .map(|value| SecretString::from(*value))
        .collect()
}

/// The instant `seconds` after the Unix epoch.
pub(super) fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(seconds, 0)
        .single()
        .expect("valid test time")
}

/// `headers` without `name`.
pub(super) fn without(mut map: HeaderMap, name: &str) -> HeaderMap {
    map.remove(name);
    map
}

/// `headers` with `name` set to `value`.
pub(super) fn with(mut map: HeaderMap, name: &'static str, value: &str) -> HeaderMap {
    map.insert(
        name,
        HeaderValue::from_str(value).expect("test header value"),
    );
    map
}
