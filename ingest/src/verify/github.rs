//! GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`, keyed with the
//! webhook secret as given; the event id is `X-GitHub-Delivery`. See
//! <https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries>.

use http::HeaderName;

use super::{Encoding, HmacScheme};

/// GitHub's settings for the body-HMAC check.
pub(super) fn scheme() -> HmacScheme {
    HmacScheme {
        header: HeaderName::from_static("x-hub-signature-256"),
        encoding: Encoding::Hex,
        prefix: Some("sha256=".to_owned()),
        id_header: Some(HeaderName::from_static("x-github-delivery")),
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use crate::verify::testing::{at, headers, secrets, without};
    use crate::verify::{DEFAULT_TOLERANCE, Scheme, Verified, Verifier, VerifyError};

    // The example from GitHub's documentation, "Validating webhook deliveries" > "Testing the
    // webhook payload validation".
    const SECRET: &str = "It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";
    const SIGNATURE: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    const DELIVERY: &str = "72d3162e-cc78-11e3-81ab-4c9367dc0958";

    fn verifier(secret_list: &[&str]) -> Verifier {
        Verifier::new(Scheme::GitHub, &secrets(secret_list), DEFAULT_TOLERANCE).expect("valid")
    }

    fn request(signature: &str) -> HeaderMap {
        headers(&[
            ("x-hub-signature-256", signature),
            ("x-github-delivery", DELIVERY),
            ("x-github-event", "push"),
        ])
    }

    fn code(result: Result<Verified, VerifyError>) -> &'static str {
        result.expect_err("must fail").code()
    }

    #[test]
    fn the_documented_example_verifies_and_names_the_delivery() {
        let verified = verifier(&[SECRET])
            .verify(&request(SIGNATURE), BODY, at(0))
            .expect("valid");
        assert_eq!(verified.event_id.as_deref(), Some(DELIVERY));
        let anonymous = without(request(SIGNATURE), "x-github-delivery");
        let verified = verifier(&[SECRET]).verify(&anonymous, BODY, at(0));
        assert_eq!(verified, Ok(Verified::default()));
    }

    #[test]
    fn the_second_of_two_secrets_may_match() {
        let rotated = verifier(&["the previous secret", SECRET]);
        assert!(rotated.verify(&request(SIGNATURE), BODY, at(0)).is_ok());
    }

    #[test]
    fn tampering_wrong_secrets_and_bad_headers_fail() {
        let good = verifier(&[SECRET]);
        let now = at(0);
        assert_eq!(
            code(good.verify(&request(SIGNATURE), b"Hello, World?", now)),
            "invalid_signature"
        );
        let wrong = verifier(&["It's a secret to everybody"]);
        assert_eq!(
            code(wrong.verify(&request(SIGNATURE), BODY, now)),
            "invalid_signature"
        );
        let missing = without(request(SIGNATURE), "x-hub-signature-256");
        assert_eq!(code(good.verify(&missing, BODY, now)), "missing_signature");
        // The legacy SHA-1 header alone is not accepted.
        let legacy = headers(&[("x-hub-signature", "sha1=01234567890abcdef")]);
        assert_eq!(code(good.verify(&legacy, BODY, now)), "missing_signature");
        for malformed in [&SIGNATURE[7..], "sha256=zz", "sha256="] {
            let result = good.verify(&request(malformed), BODY, now);
            let expected = if malformed == "sha256=" {
                "invalid_signature"
            } else {
                "malformed_signature_header"
            };
            assert_eq!(code(result), expected, "{malformed}");
        }
    }
}
