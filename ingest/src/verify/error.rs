//! Why a request failed verification (each a 401 with a short machine code), and why a
//! secret could not be turned into a key. Neither ever carries a secret, a computed MAC or
//! the signature a request sent: only header names, fixed reasons and positions.

use http::{HeaderName, StatusCode};

/// Why a request's signature was not accepted. Every variant answers 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum VerifyError {
    /// The header carrying the signature is absent.
    #[error("the `{header}` signature header is missing")]
    MissingSignature {
        /// The signature header.
        header: HeaderName,
    },
    /// Another header the scheme signs (such as `webhook-id`) is absent.
    #[error("the `{header}` header is missing")]
    MissingHeader {
        /// The missing header.
        header: HeaderName,
    },
    /// A signature header (or a header it depends on) cannot be parsed.
    #[error("the `{header}` header is malformed: {reason}")]
    MalformedHeader {
        /// The malformed header.
        header: HeaderName,
        /// What is wrong with it, as fixed text.
        reason: &'static str,
    },
    /// No signature in the request matches any of the source's secrets.
    #[error("no signature matches the request")]
    InvalidSignature,
    /// The signed timestamp is too far from now.
    #[error("the signed timestamp is more than {tolerance_seconds} s away from the current time")]
    StaleTimestamp {
        /// The source's tolerance in seconds.
        tolerance_seconds: u64,
    },
}

impl VerifyError {
    /// The machine-readable code for the error body's `error` field.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::MissingSignature { .. } => "missing_signature",
            Self::MissingHeader { .. } => "missing_header",
            Self::MalformedHeader { .. } => "malformed_signature_header",
            Self::InvalidSignature => "invalid_signature",
            Self::StaleTimestamp { .. } => "stale_timestamp",
        }
    }

    /// The HTTP status: always 401 Unauthorized.
    pub(crate) fn status(&self) -> StatusCode {
        StatusCode::UNAUTHORIZED
    }
}

/// Why a verifier could not be built from a scheme and its secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum KeyError {
    /// The scheme verifies signatures but was given no secret.
    #[error("scheme `{scheme}` needs at least one secret")]
    NoSecrets {
        /// The scheme's name.
        scheme: &'static str,
    },
    /// The scheme verifies nothing but was given secrets.
    #[error("scheme `{scheme}` takes no secrets")]
    UnexpectedSecrets {
        /// The scheme's name.
        scheme: &'static str,
    },
    /// One secret is unusable.
    #[error("secret #{index}: {problem}")]
    InvalidSecret {
        /// Its position in the list of secrets, from 0.
        index: usize,
        /// What is wrong with it, as fixed text.
        problem: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_all_401() {
        let header = HeaderName::from_static("webhook-signature");
        let errors = [
            VerifyError::MissingSignature {
                header: header.clone(),
            },
            VerifyError::MissingHeader {
                header: header.clone(),
            },
            VerifyError::MalformedHeader {
                header,
                reason: "x",
            },
            VerifyError::InvalidSignature,
            VerifyError::StaleTimestamp {
                tolerance_seconds: 300,
            },
        ];
        let mut codes: Vec<_> = errors.iter().map(VerifyError::code).collect();
        assert!(
            errors
                .iter()
                .all(|e| e.status() == StatusCode::UNAUTHORIZED)
        );
        codes.dedup();
        assert_eq!(codes.len(), errors.len());
        assert_eq!(
            errors[2].to_string(),
            "the `webhook-signature` header is malformed: x"
        );
    }
}
