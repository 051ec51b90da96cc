//! [Standard Webhooks](https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md):
//! `webhook-signature` holds space-separated `v1,<base64 HMAC-SHA256>` and
//! `v1a,<base64 ed25519>` signatures of `{webhook-id}.{webhook-timestamp}.{body}`; other
//! versions are skipped. The keys come from `whsec_` and `whpk_` secrets ([`StandardKeys`]).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderName};

use super::VerifyError;
use super::common::{self, MAX_SIGNATURES};
use super::keys::StandardKeys;
use super::streaming::{Ed25519Candidates, EventIdSource, StreamingCheck};

const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

/// The signatures in a `webhook-signature` value, decoded.
#[derive(Debug, Default)]
struct Signatures {
    /// HMAC-SHA256 tags.
    v1: Vec<Vec<u8>>,
    /// ed25519 signatures.
    v1a: Vec<Vec<u8>>,
}

/// Parses a `webhook-signature` value; the error is a fixed reason.
fn parse_signatures(value: &str) -> Result<Signatures, &'static str> {
    let mut signatures = Signatures::default();
    let entries: Vec<&str> = value.split(' ').filter(|e| !e.is_empty()).collect();
    if entries.is_empty() {
        return Err("no signature");
    }
    if entries.len() > MAX_SIGNATURES {
        return Err("too many signatures");
    }
    for entry in entries {
        let (version, encoded) = entry
            .split_once(',')
            .ok_or("a signature is not `version,base64`")?;
        let list = match version {
            "v1" => &mut signatures.v1,
            "v1a" => &mut signatures.v1a,
            _ => continue,
        };
        list.push(
            STANDARD
                .decode(encoded)
                .map_err(|_| "a signature is not base64")?,
        );
    }
    Ok(signatures)
}

/// Starts verifying a Standard Webhooks request: the headers are read and the timestamp's age
/// checked before the body, and what is signed before the body (`{id}.{timestamp}.`) is fed.
pub(super) fn begin(
    keys: &StandardKeys,
    headers: &HeaderMap,
    now: DateTime<Utc>,
    tolerance_seconds: u64,
) -> Result<StreamingCheck, VerifyError> {
    let signatures = common::signature_header(headers, &WEBHOOK_SIGNATURE)?;
    let id = common::required_header(headers, &WEBHOOK_ID)?;
    let timestamp = common::required_header(headers, &WEBHOOK_TIMESTAMP)?;
    let timestamp =
        common::parse_unix_seconds(timestamp).ok_or_else(|| VerifyError::MalformedHeader {
            header: WEBHOOK_TIMESTAMP,
            reason: "not a Unix timestamp in seconds",
        })?;
    let Signatures { v1, v1a } =
        parse_signatures(signatures).map_err(|reason| VerifyError::MalformedHeader {
            header: WEBHOOK_SIGNATURE,
            reason,
        })?;
    common::check_fresh(timestamp, now, tolerance_seconds)?;
    let timestamp_text = timestamp.to_string();
    let signed: [&[u8]; 4] = [id.as_bytes(), b".", timestamp_text.as_bytes(), b"."];
    let ed25519 = Ed25519Candidates::start(&keys.ed25519, &v1a, &signed);
    Ok(StreamingCheck::signed(
        &keys.hmac,
        v1,
        &signed,
        ed25519,
        EventIdSource::Headers(common::event_id(id)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::testing::{at, headers, secrets, with, without};
    use crate::verify::{DEFAULT_TOLERANCE, Scheme, Verified, Verifier};
    use ed25519_dalek::SigningKey;

    // The Standard Webhooks test vector, as in the reference libraries' tests
    // (standard-webhooks/standard-webhooks, libraries/go/webhook_test.go, TestWebhookSign).
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    // The asymmetric vector from libraries/go/webhook_asymmetric_test.go
    // (TestAsymmetricWebhookSign): the ed25519 seed, and its signature of the same message.
    const ED25519_SEED: &str = "VEVTVFNJR05JTkdLRVlET05PVFVTRVRISVNGT1JBTlk=";
    const ED25519_SIGNATURE: &str = "v1a,tQ9V2XOqn7jL/DQenEFpqIugdBVtiMmER5mhSkXBNwM0mkATuDe6KYYUuxqtaiHeYGb7KaaBRdM5WqyeFiL8Ag==";

    fn verifier(secret_list: &[&str]) -> Verifier {
        Verifier::new(
            Scheme::StandardWebhooks,
            &secrets(secret_list),
            DEFAULT_TOLERANCE,
        )
        .expect("valid secrets")
    }

    fn request(signature: &str) -> HeaderMap {
        headers(&[
            ("webhook-id", ID),
            ("webhook-timestamp", &TIMESTAMP.to_string()),
            ("webhook-signature", signature),
        ])
    }

    fn public_key() -> String {
        let seed: [u8; 32] = STANDARD
            .decode(ED25519_SEED)
            .expect("base64")
            .try_into()
            .expect("32 bytes");
        let public = SigningKey::from_bytes(&seed).verifying_key();
        format!("whpk_{}", STANDARD.encode(public.as_bytes()))
    }

    fn code(result: Result<Verified, VerifyError>) -> &'static str {
        result.expect_err("must fail").code()
    }

    #[test]
    fn the_published_vector_verifies_and_names_the_event() {
        let verified = verifier(&[SECRET])
            .verify(&request(SIGNATURE), BODY, at(TIMESTAMP))
            .expect("valid");
        assert_eq!(verified.event_id.as_deref(), Some(ID));
        // The whsec_ prefix is optional, as in the reference libraries.
        let bare = verifier(&["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]);
        assert!(
            bare.verify(&request(SIGNATURE), BODY, at(TIMESTAMP))
                .is_ok()
        );
    }

    #[test]
    fn any_listed_signature_and_any_secret_may_match() {
        let listed = format!("v2,abc= v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= {SIGNATURE}");
        let rotated = verifier(&["whsec_c2VjcmV0LWJlZm9yZS1yb3RhdGlvbg==", SECRET]);
        assert!(
            rotated
                .verify(&request(&listed), BODY, at(TIMESTAMP))
                .is_ok()
        );
    }

    #[test]
    fn tampering_and_wrong_secrets_fail() {
        let good = verifier(&[SECRET]);
        let now = at(TIMESTAMP);
        assert_eq!(
            code(good.verify(&request(SIGNATURE), b"{}", now)),
            "invalid_signature"
        );
        let other_id = with(request(SIGNATURE), "webhook-id", "msg_other");
        assert_eq!(code(good.verify(&other_id, BODY, now)), "invalid_signature");
        let shifted = with(request(SIGNATURE), "webhook-timestamp", "1614265331");
        assert_eq!(code(good.verify(&shifted, BODY, now)), "invalid_signature");
        let wrong = verifier(&["whsec_c2VjcmV0LWJlZm9yZS1yb3RhdGlvbg=="]);
        assert_eq!(
            code(wrong.verify(&request(SIGNATURE), BODY, now)),
            "invalid_signature"
        );
        let unknown_version = request("v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert_eq!(
            code(good.verify(&unknown_version, BODY, now)),
            "invalid_signature"
        );
    }

    #[test]
    fn missing_and_malformed_headers_fail() {
        let good = verifier(&[SECRET]);
        let now = at(TIMESTAMP);
        let cases = [
            (
                without(request(SIGNATURE), "webhook-signature"),
                "missing_signature",
            ),
            (without(request(SIGNATURE), "webhook-id"), "missing_header"),
            (
                without(request(SIGNATURE), "webhook-timestamp"),
                "missing_header",
            ),
            (request("g0hM9SsE+OTPJTGt"), "malformed_signature_header"),
            (request("v1,not base64!"), "malformed_signature_header"),
            (
                request(&"v1,AAAA ".repeat(11)),
                "malformed_signature_header",
            ),
            (
                with(request(SIGNATURE), "webhook-timestamp", "-1614265330"),
                "malformed_signature_header",
            ),
        ];
        for (headers, expected) in cases {
            assert_eq!(
                code(good.verify(&headers, BODY, now)),
                expected,
                "{headers:?}"
            );
        }
    }

    #[test]
    fn stale_timestamps_fail_even_when_signed() {
        let good = verifier(&[SECRET]);
        assert!(
            good.verify(&request(SIGNATURE), BODY, at(TIMESTAMP + 300))
                .is_ok()
        );
        for now in [TIMESTAMP + 301, TIMESTAMP - 301] {
            let result = good.verify(&request(SIGNATURE), BODY, at(now));
            assert_eq!(code(result), "stale_timestamp");
        }
        let lenient = Verifier::new(
            Scheme::StandardWebhooks,
            &secrets(&[SECRET]),
            std::time::Duration::from_secs(3600),
        )
        .expect("valid");
        assert!(
            lenient
                .verify(&request(SIGNATURE), BODY, at(TIMESTAMP + 3600))
                .is_ok()
        );
    }

    #[test]
    fn the_published_ed25519_vector_verifies_with_the_public_key() {
        let public = public_key();
        let asymmetric = verifier(&[&public]);
        let now = at(TIMESTAMP);
        assert!(
            asymmetric
                .verify(&request(ED25519_SIGNATURE), BODY, now)
                .is_ok()
        );
        assert_eq!(
            code(asymmetric.verify(&request(ED25519_SIGNATURE), b"{}", now)),
            "invalid_signature"
        );
        // An HMAC signature does not satisfy a public key, nor the reverse.
        assert_eq!(
            code(asymmetric.verify(&request(SIGNATURE), BODY, now)),
            "invalid_signature"
        );
        let symmetric = verifier(&[SECRET]);
        let result = symmetric.verify(&request(ED25519_SIGNATURE), BODY, now);
        assert_eq!(code(result), "invalid_signature");
        // Mixed rotation: an HMAC secret and a public key side by side.
        let mixed = verifier(&[SECRET, &public]);
        assert!(mixed.verify(&request(ED25519_SIGNATURE), BODY, now).is_ok());
        assert!(mixed.verify(&request(SIGNATURE), BODY, now).is_ok());
    }
}
