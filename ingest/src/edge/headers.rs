//! Which request headers travel in the envelope: names lower-cased, hop-by-hop and
//! credential headers dropped (the built-in list below and a source's `drop_headers`),
//! repeated headers joined, values made safe for SQS.
//!
//! Signature headers (`X-Hub-Signature-256`, `Stripe-Signature`, …) are kept: a MAC or a
//! public-key signature reveals nothing about the key, and lets a stored event be checked
//! again. Headers that carry a secret verbatim are dropped.

use std::collections::BTreeMap;

use http::{HeaderMap, HeaderName};

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

/// Headers that carry credentials in plain text, which must never be stored.
const CREDENTIALS: &[&str] = &[
    // HTTP authentication and sessions (RFC 9110 section 11, RFC 6265).
    "authorization",
    "proxy-authorization",
    "cookie",
    // Common names for API keys and shared tokens.
    "x-api-key",
    "x-api-token",
    "x-auth-token",
    "x-access-token",
    "x-webhook-secret",
    "x-webhook-token",
    // AWS temporary credentials.
    "x-amz-security-token",
    // GitLab: the webhook's secret token, verbatim.
    "x-gitlab-token",
    // Asana (REST Hooks): the handshake's secret, which then keys X-Hook-Signature.
    "x-hook-secret",
    // Telegram: the `secret_token` given to setWebhook.
    "x-telegram-bot-api-secret-token",
    // Google push notification channels: the channel's token.
    "x-goog-channel-token",
    // Shopify's Admin API access token, should a caller forward one.
    "x-shopify-access-token",
];

/// The headers to keep, without the hop-by-hop and credential headers nor those in
/// `extra_drops` (the source's `drop_headers`); or `Err(total)` when they exceed `limit`
/// bytes.
pub(crate) fn envelope_headers(
    headers: &HeaderMap,
    extra_drops: &[HeaderName],
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
    for (header, value) in headers {
        let name = header.as_str(); // http lower-cases names already
        if HOP_BY_HOP.contains(&name)
            || CREDENTIALS.contains(&name)
            || extra_drops.contains(header)
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
        let kept = envelope_headers(&headers, &[], 1024).expect("under the limit");
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
    fn drops_providers_plaintext_tokens_and_a_sources_own() {
        let mut headers = HeaderMap::new();
        for name in CREDENTIALS {
            headers.insert(*name, HeaderValue::from_static("secret"));
        }
        headers.insert("X-Gitlab-Token", HeaderValue::from_static("secret"));
        headers.insert("X-Hook-Secret", HeaderValue::from_static("secret"));
        headers.insert("X-Acme-Token", HeaderValue::from_static("secret"));
        headers.insert("X-Acme-Token-Id", HeaderValue::from_static("kept"));
        headers.insert("X-Hub-Signature-256", HeaderValue::from_static("sha256=ab"));
        let extra = [HeaderName::from_static("x-acme-token")];
        let kept = envelope_headers(&headers, &extra, 1024).expect("under the limit");
        assert_eq!(
            kept,
            BTreeMap::from([
                ("x-acme-token-id".to_owned(), "kept".to_owned()),
                ("x-hub-signature-256".to_owned(), "sha256=ab".to_owned()),
            ])
        );
        // Without the source's list, its token is kept: the list is what drops it.
        let kept = envelope_headers(&headers, &[], 1024).expect("under the limit");
        assert_eq!(kept.get("x-acme-token").map(String::as_str), Some("secret"));
        // Dropped headers do not count towards the limit.
        assert!(envelope_headers(&headers, &extra, 50).is_ok());
    }

    #[test]
    fn refuses_headers_over_the_limit() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-big",
            HeaderValue::from_str(&"v".repeat(100)).expect("ascii"),
        );
        assert_eq!(envelope_headers(&headers, &[], 50), Err(105));
    }
}
