//! Keys made from secrets: HMAC-SHA256 keys, and Standard Webhooks' `whsec_`/`whpk_` keys. The key schedule is computed once when the source is
//! loaded; checks clone it, feed the signed content and compare with `Mac::verify_slice`
//! (constant time). `Debug` never shows key material.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::VerifyingKey;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use sha2::Sha256;

use super::KeyError;

/// A keyed HMAC-SHA256, ready to be cloned per check.
#[derive(Clone)]
pub(super) struct HmacKey(Hmac<Sha256>);

impl fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HmacKey([REDACTED])")
    }
}

impl HmacKey {
    /// A key from raw bytes; `index` is the secret's position, for the error.
    pub(super) fn new(key: &[u8], index: usize) -> Result<Self, KeyError> {
        if key.is_empty() {
            return Err(KeyError::InvalidSecret {
                index,
                problem: "the key is empty",
            });
        }
        Hmac::<Sha256>::new_from_slice(key)
            .map(Self)
            .map_err(|_| KeyError::InvalidSecret {
                index,
                problem: "the key cannot be used for HMAC-SHA256",
            })
    }

    /// The MAC state after `parts`, in order; verify it (or clones of it) against tags.
    pub(super) fn over(&self, parts: &[&[u8]]) -> Hmac<Sha256> {
        let mut mac = self.0.clone();
        for part in parts {
            mac.update(part);
        }
        mac
    }
}

/// Keys that are the secret strings' bytes as given (GitHub, Stripe, Shopify, Hmac).
pub(super) fn raw_keys(secrets: &[SecretString]) -> Result<Vec<HmacKey>, KeyError> {
    secrets
        .iter()
        .enumerate()
        .map(|(index, secret)| HmacKey::new(secret.expose_secret().as_bytes(), index))
        .collect()
}

/// A source's Standard Webhooks keys: symmetric and public.
#[derive(Debug)]
pub(super) struct StandardKeys {
    /// `whsec_` keys.
    pub(super) hmac: Vec<HmacKey>,
    /// `whpk_` keys.
    pub(super) ed25519: Vec<VerifyingKey>,
}

impl StandardKeys {
    /// Keys from `whsec_<base64>` (the prefix is optional, as in the reference libraries)
    /// and `whpk_<base64 ed25519 public key>` secrets; `whsk_` private keys are refused.
    pub(super) fn parse(secrets: &[SecretString]) -> Result<Self, KeyError> {
        let mut keys = Self {
            hmac: Vec::new(),
            ed25519: Vec::new(),
        };
        for (index, secret) in secrets.iter().enumerate() {
            let invalid = |problem| KeyError::InvalidSecret { index, problem };
            let secret = secret.expose_secret();
            if secret.starts_with("whsk_") {
                return Err(invalid(
                    "this is a signing (private) key; configure its public key (whpk_…)",
                ));
            }
            if let Some(public) = secret.strip_prefix("whpk_") {
                let bytes = STANDARD
                    .decode(public)
                    .map_err(|_| invalid("the part after whpk_ is not base64"))?;
                let bytes: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| invalid("an ed25519 public key is 32 bytes"))?;
                let key = VerifyingKey::from_bytes(&bytes)
                    .map_err(|_| invalid("not a valid ed25519 public key"))?;
                keys.ed25519.push(key);
            } else {
                let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
                let key: SecretSlice<u8> = STANDARD
                    .decode(encoded)
                    .map_err(|_| invalid("the part after whsec_ is not base64"))?
                    .into();
                keys.hmac.push(HmacKey::new(key.expose_secret(), index)?);
            }
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::testing::secrets;

    #[test]
    fn any_key_may_give_any_tag() {
        use crate::verify::streaming::{EventIdSource, StreamingCheck};
        let keys = raw_keys(&secrets(&["wrong", "It's a Secret to Everybody"])).expect("keys");
        let good = hex::decode("757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")
            .expect("hex");
        let matches = |keys: &[HmacKey], tags: Vec<Vec<u8>>| {
            let mut check = StreamingCheck::signed(
                keys,
                tags,
                &[b"Hello"],
                Vec::new(),
                EventIdSource::Headers(None),
            );
            check.update(b", ");
            check.update(b"World!");
            check.finish().is_ok()
        };
        assert!(matches(&keys, vec![vec![0; 32], good.clone()]));
        assert!(!matches(&keys, vec![vec![0; 32], good[..16].to_vec()]));
        assert!(!matches(&keys[..1], vec![good]));
    }

    #[test]
    fn empty_keys_are_refused() {
        let err = raw_keys(&secrets(&["ok", ""])).expect_err("empty");
        assert_eq!(
            err,
            KeyError::InvalidSecret {
                index: 1,
                problem: "the key is empty"
            }
        );
    }

    #[test]
    fn unusable_secrets_are_refused_by_position() {
        let cases = [
            ("whsec_***", "the part after whsec_ is not base64"),
            ("whsec_", "the key is empty"),
            ("whpk_AAAA", "an ed25519 public key is 32 bytes"),
            (
                "whsk_AAAA",
                "this is a signing (private) key; configure its public key (whpk_…)",
            ),
        ];
        for (secret, problem) in cases {
            let list = secrets(&["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", secret]);
            let err = StandardKeys::parse(&list).expect_err("invalid");
            assert_eq!(
                err,
                KeyError::InvalidSecret { index: 1, problem },
                "{secret}"
            );
        }
    }
}
