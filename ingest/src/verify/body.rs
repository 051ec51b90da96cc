//! Schemes that sign the raw body alone with HMAC-SHA256 and put the MAC in one header,
//! hex or base64, perhaps after a prefix: GitHub and Shopify (fixed settings, in their own
//! modules) and the generic `hmac` scheme.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;

use super::common;
use super::keys::HmacKey;
use super::streaming::{EventIdSource, StreamingCheck};
use super::{Encoding, HmacScheme, VerifyError};

/// A body-HMAC scheme with its keys.
#[derive(Debug)]
pub(super) struct BodyHmac {
    scheme: HmacScheme,
    keys: Vec<HmacKey>,
}

impl BodyHmac {
    /// The check for `scheme` with `keys`.
    pub(super) fn new(scheme: HmacScheme, keys: Vec<HmacKey>) -> Self {
        Self { scheme, keys }
    }

    /// Starts verifying one request: the signature header is read before the body.
    pub(super) fn begin(&self, headers: &HeaderMap) -> Result<StreamingCheck, VerifyError> {
        let header = &self.scheme.header;
        let malformed = |reason| VerifyError::MalformedHeader {
            header: header.clone(),
            reason,
        };
        let value = common::signature_header(headers, header)?;
        let encoded = match &self.scheme.prefix {
            Some(prefix) => value
                .strip_prefix(prefix.as_str())
                .ok_or_else(|| malformed("the signature lacks its prefix"))?,
            None => value,
        };
        let tag = match self.scheme.encoding {
            Encoding::Hex => {
                hex::decode(encoded).map_err(|_| malformed("the signature is not hex"))
            }
            Encoding::Base64 => STANDARD
                .decode(encoded)
                .map_err(|_| malformed("the signature is not base64")),
        }?;
        let event_id = self
            .scheme
            .id_header
            .as_ref()
            .and_then(|name| common::optional_id(headers, name));
        Ok(StreamingCheck::signed(
            &self.keys,
            vec![tag],
            &[],
            Vec::new(),
            EventIdSource::Headers(event_id),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::testing::{at, headers, secrets, without};
    use crate::verify::{DEFAULT_TOLERANCE, Scheme, Verified, Verifier};
    use http::HeaderName;

    // No published vector exists for a generic HMAC; these were computed independently with
    // python3: hmac.new(b"acme-signing-secret", BODY, hashlib.sha256), .hexdigest() and
    // base64.b64encode(.digest()).
    const SECRET: &str = "acme-signing-secret";
    const BODY: &[u8] = br#"{"event":"invoice.paid","n":42}"#;
    const HEX: &str = "b3f1c3ed367dbf76f075904a901c4c755500bf2c537949a00e55b3ea40a6c671";
    const BASE64: &str = "s/HD7TZ9v3bwdZBKkBxMdVUAvyxTeUmgDlWz6kCmxnE=";

    fn verifier(encoding: Encoding, prefix: Option<&str>, secret_list: &[&str]) -> Verifier {
        let scheme = Scheme::Hmac(HmacScheme {
            header: HeaderName::from_static("x-acme-signature"),
            encoding,
            prefix: prefix.map(str::to_owned),
            id_header: Some(HeaderName::from_static("x-acme-delivery")),
        });
        Verifier::new(scheme, &secrets(secret_list), DEFAULT_TOLERANCE).expect("valid")
    }

    fn request(signature: &str) -> HeaderMap {
        headers(&[
            ("x-acme-signature", signature),
            ("x-acme-delivery", "dlv-42"),
        ])
    }

    fn code(result: Result<Verified, VerifyError>) -> &'static str {
        result.expect_err("must fail").code()
    }

    #[test]
    fn hex_with_prefix_and_base64_without_verify() {
        let now = at(0);
        let hex = verifier(Encoding::Hex, Some("sha256="), &[SECRET]);
        let verified = hex
            .verify(&request(&format!("sha256={HEX}")), BODY, now)
            .expect("valid");
        assert_eq!(verified.event_id.as_deref(), Some("dlv-42"));
        let upper = format!("sha256={}", HEX.to_ascii_uppercase());
        assert!(hex.verify(&request(&upper), BODY, now).is_ok());
        let base64 = verifier(Encoding::Base64, None, &[SECRET]);
        assert!(base64.verify(&request(BASE64), BODY, now).is_ok());
        let no_id = without(request(BASE64), "x-acme-delivery");
        assert_eq!(base64.verify(&no_id, BODY, now), Ok(Verified::default()));
    }

    #[test]
    fn rotation_tampering_and_wrong_secrets() {
        let now = at(0);
        let rotated = verifier(Encoding::Base64, None, &["old-secret", SECRET]);
        assert!(rotated.verify(&request(BASE64), BODY, now).is_ok());
        assert_eq!(
            code(rotated.verify(&request(BASE64), b"{}", now)),
            "invalid_signature"
        );
        let wrong = verifier(Encoding::Base64, None, &["old-secret"]);
        assert_eq!(
            code(wrong.verify(&request(BASE64), BODY, now)),
            "invalid_signature"
        );
    }

    #[test]
    fn missing_and_malformed_headers_fail() {
        let now = at(0);
        let hex = verifier(Encoding::Hex, Some("sha256="), &[SECRET]);
        let missing = without(request(HEX), "x-acme-signature");
        assert_eq!(code(hex.verify(&missing, BODY, now)), "missing_signature");
        for malformed in [HEX, "sha256=xyz", "sha256=abc", "sha1=abcd"] {
            let result = hex.verify(&request(malformed), BODY, now);
            assert_eq!(code(result), "malformed_signature_header", "{malformed}");
        }
        let base64 = verifier(Encoding::Base64, None, &[SECRET]);
        let result = base64.verify(&request("not*base64"), BODY, now);
        assert_eq!(code(result), "malformed_signature_header");
        // Well-formed but the wrong length: simply does not match.
        let short = base64.verify(&request("AAAA"), BODY, now);
        assert_eq!(code(short), "invalid_signature");
    }
}
