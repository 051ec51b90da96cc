//! Which request headers travel in the envelope: names lower-cased, hop-by-hop and
//! credential headers dropped, repeated headers joined, values made safe for SQS.

use std::collections::BTreeMap;

use http::HeaderMap;

/// Headers that describe one hop (RFC 9110 section 7.6.1), not the webhook.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
];

/// Headers that carry credentials, which must never be stored.
const CREDENTIALS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "x-amz-security-token",
];

/// The headers to keep, or `Err(total)` when they exceed `limit` bytes.
pub fn envelope_headers(
    headers: &HeaderMap,
    limit: usize,
) -> Result<BTreeMap<String, String>, usize> {
    let named_by_connection: Vec<String> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    let mut kept = BTreeMap::<String, String>::new();
    let mut total = 0;
    for (name, value) in headers {
        let name = name.as_str(); // http lower-cases names already
        if HOP_BY_HOP.contains(&name)
            || CREDENTIALS.contains(&name)
            || named_by_connection.iter().any(|n| n == name)
        {
            continue;
        }
        let value = sqs_safe(&String::from_utf8_lossy(value.as_bytes()));
        total += name.len() + value.len();
        kept.entry(name.to_owned())
            .and_modify(|joined| {
                joined.push_str(", ");
                joined.push_str(&value);
            })
            .or_insert(value);
    }
    if total > limit { Err(total) } else { Ok(kept) }
}

/// Replaces the two characters SQS refuses and JSON does not escape (U+FFFE, U+FFFF).
fn sqs_safe(value: &str) -> String {
    value.replace(['\u{FFFE}', '\u{FFFF}'], "\u{FFFD}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn drops_hop_by_hop_and_credentials_and_joins_repeats() {
        let mut headers = HeaderMap::new();
        headers.insert("Content-Type", HeaderValue::from_static("application/json"));
        headers.insert("Authorization", HeaderValue::from_static("Bearer secret"));
        headers.insert("Cookie", HeaderValue::from_static("session=secret"));
        headers.insert(
            "Connection",
            HeaderValue::from_static("keep-alive, X-Private"),
        );
        headers.insert("X-Private", HeaderValue::from_static("per-hop"));
        headers.insert("Transfer-Encoding", HeaderValue::from_static("chunked"));
        headers.append("X-Tag", HeaderValue::from_static("a"));
        headers.append("X-Tag", HeaderValue::from_static("b"));
        headers.insert(
            "X-Raw",
            HeaderValue::from_bytes(b"caf\xe9").expect("obs-text is allowed"),
        );
        let kept = envelope_headers(&headers, 1024).expect("under the limit");
        assert_eq!(
            kept,
            BTreeMap::from([
                ("content-type".to_owned(), "application/json".to_owned()),
                ("x-raw".to_owned(), "caf\u{FFFD}".to_owned()),
                ("x-tag".to_owned(), "a, b".to_owned()),
            ])
        );
    }

    #[test]
    fn refuses_headers_over_the_limit() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-big",
            HeaderValue::from_str(&"v".repeat(100)).expect("ascii"),
        );
        assert_eq!(envelope_headers(&headers, 50), Err(105));
    }
}
