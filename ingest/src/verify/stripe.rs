//! Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…][,v0=…]`, HMAC-SHA256 of
//! `{t}.{body}` keyed with the endpoint secret exactly as given (`whsec_…` included). Any `v1`
//! may match; other schemes (`v0`, test-mode extras) are ignored. The event id is the
//! top-level `id` string of the JSON body, found by [`super::stripe_event_id`].

use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderName};

use super::VerifyError;
use super::common::{self, MAX_SIGNATURES};
use super::keys::HmacKey;
use super::streaming::{EventIdSource, StreamingCheck};

const STRIPE_SIGNATURE: HeaderName = HeaderName::from_static("stripe-signature");

/// A parsed `Stripe-Signature` value.
#[derive(Debug, PartialEq, Eq)]
struct Header {
    timestamp: i64,
    v1: Vec<Vec<u8>>,
}

/// Parses a `Stripe-Signature` value; the error is a fixed reason.
fn parse(value: &str) -> Result<Header, &'static str> {
    let mut timestamp = None;
    let mut v1 = Vec::new();
    for item in value.split(',').map(str::trim) {
        let (key, text) = item.split_once('=').ok_or("an item is not key=value")?;
        match key {
            "t" if timestamp.is_some() => return Err("t= is repeated"),
            "t" => {
                timestamp =
                    Some(common::parse_unix_seconds(text).ok_or("t= is not a Unix timestamp")?);
            }
            "v1" if v1.len() == MAX_SIGNATURES => return Err("too many signatures"),
            "v1" => v1.push(hex::decode(text).map_err(|_| "a v1= signature is not hex")?),
            _ => {}
        }
    }
    Ok(Header {
        timestamp: timestamp.ok_or("no t= timestamp")?,
        v1,
    })
}

/// Starts verifying a Stripe request: the header is read and the timestamp's age checked
/// before the body, and what is signed before the body (`{t}.`) is fed.
pub(super) fn begin(
    keys: &[HmacKey],
    headers: &HeaderMap,
    now: DateTime<Utc>,
    tolerance_seconds: u64,
) -> Result<StreamingCheck, VerifyError> {
    let value = common::signature_header(headers, &STRIPE_SIGNATURE)?;
    let header = parse(value).map_err(|reason| VerifyError::MalformedHeader {
        header: STRIPE_SIGNATURE,
        reason,
    })?;
    common::check_fresh(header.timestamp, now, tolerance_seconds)?;
    let timestamp = header.timestamp.to_string();
    let signed: [&[u8]; 2] = [timestamp.as_bytes(), b"."];
    Ok(StreamingCheck::signed(
        keys,
        header.v1,
        &signed,
        Vec::new(),
        EventIdSource::StripeBody(Vec::new()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::testing::{at, headers, secrets};
    use crate::verify::{DEFAULT_TOLERANCE, Scheme, Verified, Verifier};

    // Stripe publishes no fixed test vector; these were computed independently with python3:
    // hmac.new(SECRET, b"1700000000." + BODY, hashlib.sha256).hexdigest(), and the same with
    // PREVIOUS as the key.
    const SECRET: &str = "whsec_3yV9bQ0zL8hKp2mN7xR4tW6cE1aF5dG9";
    const PREVIOUS: &str = "whsec_previousSecretStillValid0000000";
    const T: i64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"id":"evt_3OqXyZ2eZvKYlo2C0abcDEFg","object":"event","type":"payment_intent.succeeded"}"#;
    const V1: &str = "001f2359e5eab69fc33e615926d7a61bcc106eeb9052f1d4c6808e8219c1aa34";
    const V1_PREVIOUS: &str = "566f6508f38c3f8feee3fbf03868d5e64d2d811d08b58def936a8230242d95e7";

    fn verifier(secret_list: &[&str]) -> Verifier {
        Verifier::new(Scheme::Stripe, &secrets(secret_list), DEFAULT_TOLERANCE).expect("valid")
    }

    fn request(signature: &str) -> HeaderMap {
        headers(&[("stripe-signature", signature)])
    }

    fn code(result: Result<Verified, VerifyError>) -> &'static str {
        result.expect_err("must fail").code()
    }

    #[test]
    fn a_valid_signature_verifies_and_names_the_event() {
        let verified = verifier(&[SECRET])
            .verify(
                &request(&format!("t={T},v1={V1},v0=6ffbb59b2300aae63f27")),
                BODY,
                at(T),
            )
            .expect("valid");
        assert_eq!(
            verified.event_id.as_deref(),
            Some("evt_3OqXyZ2eZvKYlo2C0abcDEFg")
        );
    }

    #[test]
    fn any_v1_and_any_secret_may_match() {
        let both = format!("t={T},v1={V1_PREVIOUS},v1={V1}");
        assert!(
            verifier(&[SECRET])
                .verify(&request(&both), BODY, at(T))
                .is_ok()
        );
        let rotated = verifier(&["whsec_unrelated", PREVIOUS]);
        let old = format!("t={T},v1={V1_PREVIOUS}");
        assert!(rotated.verify(&request(&old), BODY, at(T)).is_ok());
    }

    #[test]
    fn tampering_wrong_secrets_and_bad_headers_fail() {
        let good = verifier(&[SECRET]);
        let now = at(T);
        let signed = format!("t={T},v1={V1}");
        assert_eq!(
            code(good.verify(&request(&signed), b"{}", now)),
            "invalid_signature"
        );
        let moved = format!("t={},v1={V1}", T + 1);
        assert_eq!(
            code(good.verify(&request(&moved), BODY, now)),
            "invalid_signature"
        );
        // The key is the whole secret, prefix included.
        let stripped = verifier(&[&SECRET["whsec_".len()..]]);
        assert_eq!(
            code(stripped.verify(&request(&signed), BODY, now)),
            "invalid_signature"
        );
        let only_v0 = format!("t={T},v0={V1}");
        assert_eq!(
            code(good.verify(&request(&only_v0), BODY, now)),
            "invalid_signature"
        );
        assert_eq!(
            code(good.verify(&HeaderMap::new(), BODY, now)),
            "missing_signature"
        );
        for malformed in [
            V1.to_owned(),
            format!("v1={V1}"),
            format!("t=abc,v1={V1}"),
            format!("t={T},t={T},v1={V1}"),
            format!("t={T},v1=xyz"),
            format!("t={T},v1"),
            format!("t={T}{}", ",v1=00".repeat(11)),
        ] {
            let result = good.verify(&request(&malformed), BODY, now);
            assert_eq!(code(result), "malformed_signature_header", "{malformed}");
        }
    }

    #[test]
    fn stale_timestamps_fail_even_when_signed() {
        let good = verifier(&[SECRET]);
        let signed = request(&format!("t={T},v1={V1}"));
        assert!(good.verify(&signed, BODY, at(T - 300)).is_ok());
        assert_eq!(
            code(good.verify(&signed, BODY, at(T + 301))),
            "stale_timestamp"
        );
        assert_eq!(
            code(good.verify(&signed, BODY, at(T - 301))),
            "stale_timestamp"
        );
    }

    #[test]
    fn parse_reads_t_and_every_v1() {
        let parsed = parse("t=12,v1=00ff, v1=0a ,v0=zz,other=1").expect("valid");
        assert_eq!(
            parsed,
            Header {
                timestamp: 12,
                v1: vec![vec![0, 255], vec![10]]
            }
        );
    }
}
