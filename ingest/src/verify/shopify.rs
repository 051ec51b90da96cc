//! Shopify: `X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256 of the body>`, keyed with the app's
//! client secret as given; the event id is `X-Shopify-Webhook-Id`.

use http::HeaderName;

use super::{Encoding, HmacScheme};

/// Shopify's settings for the body-HMAC check.
pub(super) fn scheme() -> HmacScheme {
    HmacScheme {
        header: HeaderName::from_static("x-shopify-hmac-sha256"),
        encoding: Encoding::Base64,
        prefix: None,
        id_header: Some(HeaderName::from_static("x-shopify-webhook-id")),
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use crate::verify::testing::{at, headers, secrets, without};
    use crate::verify::{DEFAULT_TOLERANCE, Scheme, Verified, Verifier, VerifyError};

    // Shopify publishes no fixed test vector; this one was computed independently with
    // python3: base64.b64encode(hmac.new(SECRET, BODY, hashlib.sha256).digest()).
    const SECRET: &str = "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";
    const BODY: &[u8] =
        br#"{"id":820982911946154508,"email":"jon@example.com","topic":"orders/create"}"#;
    const SIGNATURE: &str = "jFXw0lZQmf4uFbC9AElxUedtaIRsN11mc6ARsuVvyeY=";
    const WEBHOOK_ID: &str = "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043";

    fn verifier(secret_list: &[&str]) -> Verifier {
        Verifier::new(Scheme::Shopify, &secrets(secret_list), DEFAULT_TOLERANCE).expect("valid")
    }

    fn request(signature: &str) -> HeaderMap {
        headers(&[
            ("x-shopify-hmac-sha256", signature),
            ("x-shopify-webhook-id", WEBHOOK_ID),
            ("x-shopify-topic", "orders/create"),
        ])
    }

    fn code(result: Result<Verified, VerifyError>) -> &'static str {
        result.expect_err("must fail").code()
    }

    #[test]
    fn a_valid_signature_verifies_and_names_the_webhook() {
        let verified = verifier(&[SECRET])
            .verify(&request(SIGNATURE), BODY, at(0))
            .expect("valid");
        assert_eq!(verified.event_id.as_deref(), Some(WEBHOOK_ID));
    }

    #[test]
    fn the_second_of_two_secrets_may_match() {
        let rotated = verifier(&["shpss_previous", SECRET]);
        assert!(rotated.verify(&request(SIGNATURE), BODY, at(0)).is_ok());
    }

    #[test]
    fn tampering_wrong_secrets_and_bad_headers_fail() {
        let good = verifier(&[SECRET]);
        let now = at(0);
        let tampered =
            br#"{"id":820982911946154508,"email":"eve@example.com","topic":"orders/create"}"#;
        assert_eq!(
            code(good.verify(&request(SIGNATURE), tampered, now)),
            "invalid_signature"
        );
        let wrong = verifier(&["shpss_previous"]);
        assert_eq!(
            code(wrong.verify(&request(SIGNATURE), BODY, now)),
            "invalid_signature"
        );
        let missing = without(request(SIGNATURE), "x-shopify-hmac-sha256");
        assert_eq!(code(good.verify(&missing, BODY, now)), "missing_signature");
        for malformed in [
            "jFXw0lZQmf4uFbC9AElxUedtaIRsN11mc6ARsuVvyeY",
            "%%%",
            "sha256=abc=",
        ] {
            let result = good.verify(&request(malformed), BODY, now);
            assert_eq!(code(result), "malformed_signature_header", "{malformed}");
        }
    }
}
