//! The verifier's unit tests: what each scheme requires and never shows, then property
//! tests: for every scheme, arbitrary header values and bodies never make `verify` panic, a
//! random signature never verifies, and a body streamed in any pieces verifies as it does
//! whole. Each scheme's own vectors are in its module.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;

use super::testing::{at, headers, secrets};
use super::*;

#[test]
fn none_accepts_anything_and_reads_its_id_header() {
    let verifier = Verifier::new(
        Scheme::None {
            id_header: Some(HeaderName::from_static("x-delivery")),
        },
        &[],
        DEFAULT_TOLERANCE,
    )
    .expect("no secrets needed");
    let now = Utc::now();
    let with_id = headers(&[("x-delivery", "d-1")]);
    let verified = verifier.verify(&with_id, b"any", now).expect("unverified");
    assert_eq!(verified.event_id.as_deref(), Some("d-1"));
    let bad_id = headers(&[("x-delivery", "has space")]);
    assert_eq!(verifier.verify(&bad_id, b"", now), Ok(Verified::default()));
    let plain = Verifier::unverified();
    assert_eq!(plain.verify(&with_id, b"", now), Ok(Verified::default()));
    assert_eq!(plain.scheme(), "none");
}

#[test]
fn secrets_are_required_exactly_where_needed() {
    let err = Verifier::new(Scheme::GitHub, &[], DEFAULT_TOLERANCE).expect_err("no secret");
    assert_eq!(err, KeyError::NoSecrets { scheme: "github" });
    let err = Verifier::new(
        Scheme::None { id_header: None },
        &secrets(&["x"]),
        DEFAULT_TOLERANCE,
    )
    .expect_err("secret for none");
    assert_eq!(err, KeyError::UnexpectedSecrets { scheme: "none" });
}

#[test]
fn debug_output_never_shows_a_secret() {
    let secret = "It's a Secret to Everybody";
    for scheme in [Scheme::GitHub, Scheme::Stripe, Scheme::Shopify] {
        let verifier =
            Verifier::new(scheme, &secrets(&[secret]), DEFAULT_TOLERANCE).expect("valid");
        let debug = format!("{verifier:?}");
        assert!(!debug.contains("Secret"), "{debug}");
        assert!(debug.contains("REDACTED"), "{debug}");
    }
    let standard = Verifier::new(
        Scheme::StandardWebhooks,
        &secrets(&["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]),
        DEFAULT_TOLERANCE,
    )
    .expect("valid");
    assert!(!format!("{standard:?}").contains("MfKQ9r8G"));
}

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

/// HMAC-SHA256 of `parts` with `key`, computed here independently of the verifiers.
fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    use hmac::{KeyInit as _, Mac as _};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// A correctly signed request of `body` for each scheme: (verifier, headers).
fn signed_requests(body: &[u8]) -> Vec<(Verifier, HeaderMap)> {
    use ed25519_dalek::Signer as _;
    let t = NOW.to_string();
    let standard_key = STANDARD
        .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        .expect("base64");
    let signing = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let signed: Vec<u8> = [b"msg_1." as &[u8], t.as_bytes(), b".", body].concat();
    let ed = signing.sign(&signed).to_bytes();
    let standard_v1 = mac(&standard_key, &[b"msg_1.", t.as_bytes(), b".", body]);
    let stripe_v1 = mac(b"whsec_b", &[t.as_bytes(), b".", body]);
    let github = mac(b"b", &[body]);
    let header = |pairs: &[(&'static str, String)]| {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).expect("ASCII"));
        }
        map
    };
    let verifiers = verifiers();
    let requests = [
        header(&[
            ("webhook-id", "msg_1".to_owned()),
            ("webhook-timestamp", t.clone()),
            (
                "webhook-signature",
                format!(
                    "v1,{} v1a,{}",
                    STANDARD.encode(standard_v1),
                    STANDARD.encode(ed)
                ),
            ),
        ]),
        header(&[
            (
                "x-hub-signature-256",
                format!("sha256={}", hex::encode(github)),
            ),
            ("x-github-delivery", "d-1".to_owned()),
        ]),
        header(&[(
            "stripe-signature",
            format!("t={t},v1={}", hex::encode(stripe_v1)),
        )]),
        header(&[("x-shopify-hmac-sha256", STANDARD.encode(github))]),
        header(&[
            ("x-sig", format!("sha256={}", hex::encode(github))),
            ("x-id", "i-1".to_owned()),
        ]),
    ];
    let public = format!(
        "whpk_{}",
        STANDARD.encode(signing.verifying_key().as_bytes())
    );
    let ed25519_only = Verifier::new(
        Scheme::StandardWebhooks,
        &secrets(&[&public]),
        DEFAULT_TOLERANCE,
    )
    .expect("valid");
    let ed25519_request = header(&[
        ("webhook-id", "msg_1".to_owned()),
        ("webhook-timestamp", t.clone()),
        ("webhook-signature", format!("v1a,{}", STANDARD.encode(ed))),
    ]);
    verifiers
        .into_iter()
        .zip(requests)
        .map(|((verifier, _), headers)| (verifier, headers))
        .chain([(ed25519_only, ed25519_request)])
        .collect()
}

/// The body fed in pieces cut at `cuts`.
fn streamed(
    verifier: &Verifier,
    headers: &HeaderMap,
    body: &[u8],
    cuts: &[usize],
) -> Result<super::Verified, super::VerifyError> {
    let mut check = verifier.begin(headers, at(NOW))?;
    let mut bounds: Vec<usize> = cuts.iter().map(|cut| cut % (body.len() + 1)).collect();
    bounds.sort_unstable();
    bounds.push(body.len());
    let mut start = 0;
    for end in bounds {
        check.update(&body[start..end]);
        start = end;
    }
    check.finish()
}

proptest! {
    #[test]
    fn streamed_bodies_verify_as_buffered_ones_however_cut(
        text in "[a-z0-9 ]{0,600}",
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
        flip in any::<usize>(),
    ) {
        // A Stripe-like JSON body, so that the event id is found both ways.
        let body = format!(r#"{{"id":"evt_1","text":"{text}"}}"#).into_bytes();
        for (verifier, headers) in signed_requests(&body) {
            let buffered = verifier.verify(&headers, &body, at(NOW));
            prop_assert!(buffered.is_ok(), "{}: {:?}", verifier.scheme(), buffered);
            prop_assert_eq!(&streamed(&verifier, &headers, &body, &cuts), &buffered);
            let mut tampered = body.clone();
            tampered[flip % body.len()] ^= 1;
            let streamed_err = streamed(&verifier, &headers, &tampered, &cuts).map_err(|e| e.code());
            prop_assert_eq!(streamed_err, Err("invalid_signature"));
            let buffered_err = verifier.verify(&headers, &tampered, at(NOW)).map_err(|e| e.code());
            prop_assert_eq!(buffered_err, Err("invalid_signature"));
        }
    }
}
