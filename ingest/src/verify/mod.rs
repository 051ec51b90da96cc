//! Webhook signature verification: one [`Verifier`] per configured source checks a
//! request's signature headers against the source's secrets and finds the provider's own
//! event id.
//!
//! Schemes ([`Scheme`]):
//! - **Standard Webhooks** (`webhook-id`, `webhook-timestamp`, `webhook-signature`): HMAC-SHA256
//!   (`v1,<base64>`, secrets `whsec_<base64 key>`) or ed25519 (`v1a,<base64>`, public keys
//!   `whpk_<base64>`) over `{id}.{timestamp}.{body}`; the event id is `webhook-id`.
//! - **GitHub**: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`; the event id is
//!   `X-GitHub-Delivery`.
//! - **Stripe**: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=…]` over `{t}.{body}`, keyed with the
//!   whole secret string (`whsec_…` included); the event id is the body's top-level `id`.
//! - **Shopify**: `X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256 of the body>`; the event id is
//!   `X-Shopify-Webhook-Id`.
//! - **Hmac**: any HMAC-SHA256 of the body in a configured header (hex or base64, optional
//!   prefix such as `sha256=`), with an optional id header.
//! - **None**: nothing is verified; an optional id header still names the event.
//!
//! Several secrets mean rotation: a request passes when any secret verifies any signature it
//! carries. MACs are compared in constant time by the `hmac` crate (`Mac::verify_slice`);
//! ed25519 signatures are checked by `ed25519-dalek` (`verify_stream`, with the extra checks
//! of `verify_strict` made first: see [`streaming`]).
//!
//! **Timestamps.** Standard Webhooks and Stripe sign a timestamp; a request whose timestamp is
//! more than the source's tolerance (default [`DEFAULT_TOLERANCE`], 300 s) before or after now
//! is rejected as stale, even when its signature is valid. The age is checked with the
//! headers, before the body is read ([`Verifier::begin`]): a stale request is refused as stale
//! whatever its signature.
//!
//! **Streaming.** Every scheme verifies a body fed in pieces ([`StreamingCheck`]): the MACs
//! and ed25519 signatures are computed as the body arrives, so a body offloaded to S3 is never
//! held whole. The buffered path is the same check fed the whole body.
//!
//! **Replays.** A captured request can be sent again and will verify: within the tolerance
//! window for the timestamped schemes, at any time for the others. Events are stored under
//! the key `(source, event id)` with `ON CONFLICT DO NOTHING`, so a replay that keeps its id
//! cannot produce a second row. Standard Webhooks signs its id (`webhook-id`) with the
//! timestamp, and Stripe's id is inside the signed body, so their replays always keep it.
//! The body-only schemes (GitHub, Shopify, Hmac) sign the body alone: their delivery-id
//! headers (`X-GitHub-Delivery`, `X-Shopify-Webhook-Id`, the configured `id_header`) are not
//! covered, so a captured request replayed under a new delivery id verifies and is stored
//! as a second row. A source's `event_id = "body_sha256_always"` (see [`crate::sources`])
//! ignores that header and derives the id from the body, so every replay of a body shares
//! one id; `body_sha256` does not help here, since a replay that sends a new id still has a
//! provider id.
//!
//! **Event ids.** An id is used only when it is 1 to 255 bytes of visible ASCII (`!`..=`~`).
//! Anything else (absent, empty, too long, spaces, non-ASCII, a repeated header, a Stripe body
//! that is not JSON or has no string `id`) counts as no id, and the caller falls back to the
//! source's `event_id` setting: a new UUIDv7 by default (the webhook is still accepted, but a
//! provider's retry of it is then stored again), or an id derived from the body.
//!
//! Secrets never appear in `Debug` output or in errors: keys live in types whose `Debug`
//! prints `[REDACTED]`, and [`VerifyError`] and [`KeyError`] name headers and positions only.

mod body;
mod common;
mod config;
mod error;
mod github;
mod keys;
mod shopify;
mod standard;
mod streaming;
mod stripe;
mod stripe_event_id;
#[cfg(test)]
mod testing;

use std::time::Duration;

use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderName};
use secrecy::SecretString;

pub(crate) use config::SchemeSettings;
pub(crate) use error::{KeyError, VerifyError};
pub(crate) use streaming::StreamingCheck;

/// Tolerance for signed timestamps when a source sets none: five minutes either way.
pub(crate) const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// How a source signs its webhooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// [Standard Webhooks](https://www.standardwebhooks.com/): `v1` (HMAC, `whsec_` secrets)
    /// and `v1a` (ed25519, `whpk_` public keys).
    StandardWebhooks,
    /// GitHub's `X-Hub-Signature-256`.
    GitHub,
    /// Stripe's `Stripe-Signature`.
    Stripe,
    /// Shopify's `X-Shopify-Hmac-Sha256`.
    Shopify,
    /// A generic HMAC-SHA256 of the body.
    Hmac(HmacScheme),
    /// No verification.
    None {
        /// The header holding the provider's event id, if it sends one.
        id_header: Option<HeaderName>,
    },
}

impl Scheme {
    /// The scheme's name as written in the sources file.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::StandardWebhooks => "standard_webhooks",
            Self::GitHub => "github",
            Self::Stripe => "stripe",
            Self::Shopify => "shopify",
            Self::Hmac(_) => "hmac",
            Self::None { .. } => "none",
        }
    }

    /// Whether the scheme needs at least one secret (every scheme but `None`).
    pub(crate) fn needs_secrets(&self) -> bool {
        !matches!(self, Self::None { .. })
    }

    /// Whether the scheme signs a timestamp, so that a tolerance applies.
    pub(crate) fn is_timestamped(&self) -> bool {
        matches!(self, Self::StandardWebhooks | Self::Stripe)
    }
}

/// Where and how a generic HMAC-SHA256 signature of the raw body travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HmacScheme {
    /// The header carrying the signature.
    pub header: HeaderName,
    /// How the MAC is written in the header.
    pub encoding: Encoding,
    /// Text before the encoded MAC, such as `sha256=`; it must be present when set.
    pub prefix: Option<String>,
    /// The header holding the provider's event id, if it sends one.
    pub id_header: Option<HeaderName>,
}

/// How a MAC is written in a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Encoding {
    /// Hexadecimal, either case.
    Hex,
    /// Standard base64 with padding.
    Base64,
}

/// What a successful verification learned about the request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Verified {
    /// The provider's event id, when the scheme has one and it is valid; otherwise the
    /// caller assigns one (`Source::event_id` in [`crate::sources`]).
    pub event_id: Option<String>,
}

/// Verifies the requests of one source.
#[derive(Debug)]
pub(crate) struct Verifier {
    scheme: &'static str,
    check: Check,
    tolerance_seconds: u64,
}

/// The scheme with its keys, ready to check requests.
#[derive(Debug)]
enum Check {
    Standard(keys::StandardKeys),
    Stripe(Vec<keys::HmacKey>),
    Body(body::BodyHmac),
    Unverified { id_header: Option<HeaderName> },
}

impl Verifier {
    /// A verifier for `scheme` with `secrets` (several for rotation; none for
    /// [`Scheme::None`]) and the tolerance for signed timestamps (whole seconds count).
    pub(crate) fn new(
        scheme: Scheme,
        secrets: &[SecretString],
        tolerance: Duration,
    ) -> Result<Self, KeyError> {
        let name = scheme.name();
        if scheme.needs_secrets() && secrets.is_empty() {
            return Err(KeyError::NoSecrets { scheme: name });
        }
        if !scheme.needs_secrets() && !secrets.is_empty() {
            return Err(KeyError::UnexpectedSecrets { scheme: name });
        }
        let check = match scheme {
            Scheme::StandardWebhooks => Check::Standard(keys::StandardKeys::parse(secrets)?),
            Scheme::Stripe => Check::Stripe(keys::raw_keys(secrets)?),
            Scheme::GitHub => Check::Body(body::BodyHmac::new(
                github::scheme(),
                keys::raw_keys(secrets)?,
            )),
            Scheme::Shopify => Check::Body(body::BodyHmac::new(
                shopify::scheme(),
                keys::raw_keys(secrets)?,
            )),
            Scheme::Hmac(hmac) => Check::Body(body::BodyHmac::new(hmac, keys::raw_keys(secrets)?)),
            Scheme::None { id_header } => Check::Unverified { id_header },
        };
        Ok(Self {
            scheme: name,
            check,
            tolerance_seconds: tolerance.as_secs(),
        })
    }

    /// A verifier that accepts every request and finds no event id (unknown sources).
    pub(crate) fn unverified() -> Self {
        Self {
            scheme: "none",
            check: Check::Unverified { id_header: None },
            tolerance_seconds: DEFAULT_TOLERANCE.as_secs(),
        }
    }

    /// The name of the verifier's scheme, for logs.
    pub(crate) fn scheme(&self) -> &'static str {
        self.scheme
    }

    /// Checks one request: its headers and exact body, against the time `now`. The same
    /// check as [`begin`](Self::begin), fed the whole body; a Stripe event id is then looked
    /// for in the whole body.
    pub(crate) fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Verified, VerifyError> {
        let mut check = self.begin(headers, now)?;
        check.update(body);
        let verified = check.finish()?;
        Ok(match self.check {
            Check::Stripe(_) => Verified {
                event_id: stripe_event_id::event_id(body),
            },
            _ => verified,
        })
    }

    /// Starts checking a request whose body will come in pieces: the headers are checked now
    /// (format, timestamp age), so a malformed or stale request fails before its body is
    /// read; feed the body to [`StreamingCheck::update`], then call
    /// [`StreamingCheck::finish`].
    pub(crate) fn begin(
        &self,
        headers: &HeaderMap,
        now: DateTime<Utc>,
    ) -> Result<StreamingCheck, VerifyError> {
        match &self.check {
            Check::Standard(keys) => standard::begin(keys, headers, now, self.tolerance_seconds),
            Check::Stripe(keys) => stripe::begin(keys, headers, now, self.tolerance_seconds),
            Check::Body(check) => check.begin(headers),
            Check::Unverified { id_header } => Ok(StreamingCheck::unverified(
                id_header
                    .as_ref()
                    .and_then(|name| common::optional_id(headers, name)),
            )),
        }
    }
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
