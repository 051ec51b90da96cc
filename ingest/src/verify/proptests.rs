//! Property tests: for every scheme, arbitrary header values and bodies never make `verify`
//! panic, and a random signature never verifies.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;

use super::testing::{at, secrets};
use super::{DEFAULT_TOLERANCE, Encoding, HmacScheme, Scheme, Verifier};

const NOW: i64 = 1_614_265_330;

/// One verifier per scheme that checks something, each with two secrets.
fn verifiers() -> Vec<(Verifier, &'static str)> {
    let hmac = Scheme::Hmac(HmacScheme {
        header: HeaderName::from_static("x-sig"),
        encoding: Encoding::Hex,
        prefix: Some("sha256=".to_owned()),
        id_header: Some(HeaderName::from_static("x-id")),
    });
    let public = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
    let public = format!("whpk_{}", STANDARD.encode(public.as_bytes()));
    let standard = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &public];
    [
        (Scheme::StandardWebhooks, "webhook-signature", &standard[..]),
        (Scheme::GitHub, "x-hub-signature-256", &["a", "b"][..]),
        (
            Scheme::Stripe,
            "stripe-signature",
            &["whsec_a", "whsec_b"][..],
        ),
        (Scheme::Shopify, "x-shopify-hmac-sha256", &["a", "b"][..]),
        (hmac, "x-sig", &["a", "b"][..]),
    ]
    .into_iter()
    .map(|(scheme, header, keys)| {
        let verifier = Verifier::new(scheme, &secrets(keys), DEFAULT_TOLERANCE).expect("valid");
        (verifier, header)
    })
    .collect()
}

/// Any bytes a header value may hold.
fn header_value() -> impl Strategy<Value = HeaderValue> {
    prop_oneof![
        "[ -~]{0,300}".prop_map(|text| HeaderValue::from_str(&text).expect("visible ASCII")),
        proptest::collection::vec(any::<u8>(), 0..300).prop_filter_map(
            "not a header value",
            |bytes| HeaderValue::from_bytes(&bytes).ok()
        ),
    ]
}

/// Well-formed signature headers with random MACs, for each scheme's header.
fn random_signature(header: &str, mac: &[u8; 32], ed: &[u8; 64]) -> String {
    match header {
        "webhook-signature" => format!("v1,{} v1a,{}", STANDARD.encode(mac), STANDARD.encode(ed)),
        "x-hub-signature-256" | "x-sig" => format!("sha256={}", hex::encode(mac)),
        "stripe-signature" => format!("t={NOW},v1={}", hex::encode(mac)),
        _ => STANDARD.encode(mac),
    }
}

fn request(header: &str, signature: HeaderValue, timestamp: HeaderValue) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let name = HeaderName::from_bytes(header.as_bytes()).expect("header name");
    headers.insert(name, signature);
    headers.insert("webhook-id", HeaderValue::from_static("msg_1"));
    headers.insert("webhook-timestamp", timestamp);
    headers.insert("x-github-delivery", HeaderValue::from_static("d"));
    headers
}

proptest! {
    #[test]
    fn arbitrary_headers_never_panic_nor_verify(
        signature in header_value(),
        timestamp in header_value(),
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        for (verifier, header) in verifiers() {
            let headers = request(header, signature.clone(), timestamp.clone());
            prop_assert!(verifier.verify(&headers, &body, at(NOW)).is_err());
        }
    }

    #[test]
    fn random_well_formed_signatures_never_verify(
        mac in any::<[u8; 32]>(),
        ed_half in any::<[u8; 32]>(),
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut ed = [0u8; 64];
        ed[..32].copy_from_slice(&ed_half);
        ed[32..].copy_from_slice(&mac);
        for (verifier, header) in verifiers() {
            let value = random_signature(header, &mac, &ed);
            let headers = request(
                header,
                HeaderValue::from_str(&value).expect("ASCII"),
                HeaderValue::from(NOW),
            );
            let err = verifier.verify(&headers, &body, at(NOW)).expect_err("random MAC");
            prop_assert_eq!(err.code(), "invalid_signature");
        }
    }

    #[test]
    fn unverified_sources_accept_any_request(
        id in header_value(),
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let verifier = Verifier::new(
            Scheme::None { id_header: Some(HeaderName::from_static("x-id")) },
            &[],
            DEFAULT_TOLERANCE,
        )
        .expect("valid");
        let mut headers = HeaderMap::new();
        headers.insert("x-id", id);
        let verified = verifier.verify(&headers, &body, at(NOW)).expect("unverified");
        if let Some(id) = verified.event_id {
            prop_assert!((1..=255).contains(&id.len()));
            prop_assert!(id.bytes().all(|b| b.is_ascii_graphic()));
        }
    }
}
