//! Verification of a body that arrives in pieces: [`Verifier::begin`](super::Verifier::begin)
//! reads and checks the headers (their format, the signed timestamp's age) before any byte of
//! the body, so a malformed or stale request fails before anything is stored;
//! [`StreamingCheck::update`] feeds each piece of the body to every candidate MAC or
//! signature; [`StreamingCheck::finish`] compares them and gives what was learnt.
//!
//! The buffered path ([`Verifier::verify`](super::Verifier::verify)) is this same check fed
//! the whole body at once, so both paths accept and refuse exactly the same requests.
//!
//! ed25519 (`v1a`) streams with ed25519-dalek's `VerifyingKey::verify_stream`. That API skips
//! two checks `verify_strict` makes (a small-order `R` in the signature, a weak public key),
//! so [`Ed25519Candidates`] makes them itself before streaming: with them the result is the
//! same as `verify_strict`'s (both compare the recomputed `R` with the signature's encoded
//! `R`, and both refuse a non-canonical `s`).

use ed25519_dalek::{Signature, StreamVerifier, VerifyingKey};
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

use super::keys::HmacKey;
use super::{Verified, VerifyError, stripe_event_id};

/// Most bytes of a Stripe body kept to find its event id: Stripe writes `id` first.
pub(crate) const STRIPE_ID_WINDOW_BYTES: usize = 64 * 1024;

/// A verification in progress over a body fed in pieces.
pub(crate) struct StreamingCheck {
    /// Whether a signature must match (false for the `none` scheme).
    required: bool,
    /// One MAC per key, already fed what is signed before the body.
    macs: Vec<Hmac<Sha256>>,
    /// The MAC tags the request carries.
    tags: Vec<Vec<u8>>,
    /// The ed25519 (key, signature) pairs that may match.
    ed25519: Vec<StreamVerifier>,
    /// Where the event id comes from.
    event_id: EventIdSource,
}

impl std::fmt::Debug for StreamingCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingCheck")
            .field("required", &self.required)
            .field("candidates", &(self.macs.len() + self.ed25519.len()))
            .finish_non_exhaustive()
    }
}

/// Where a webhook's event id comes from.
#[derive(Debug)]
pub(super) enum EventIdSource {
    /// From the headers (or none at all).
    Headers(Option<String>),
    /// From the body's top-level `id` (Stripe): the body's first bytes, kept as they come.
    StripeBody(Vec<u8>),
}

/// The ed25519 verifications to stream: every valid (public key, signature) pair.
pub(super) struct Ed25519Candidates;

impl Ed25519Candidates {
    /// Stream verifiers for each key and each signature that `verify_strict` would not refuse
    /// before hashing (weak key, small-order or undecodable `R`, non-canonical `s`), each fed
    /// `signed_prefix` already.
    pub(super) fn start(
        keys: &[VerifyingKey],
        signatures: &[Vec<u8>],
        signed_prefix: &[&[u8]],
    ) -> Vec<StreamVerifier> {
        let mut verifiers = Vec::new();
        for signature in signatures
            .iter()
            .filter_map(|bytes| Signature::from_slice(bytes).ok())
            .filter(|signature| {
                // verify_strict: R must decompress and must not be of small order.
                VerifyingKey::from_bytes(signature.r_bytes()).is_ok_and(|r| !r.is_weak())
            })
        {
            for key in keys.iter().filter(|key| !key.is_weak()) {
                if let Ok(mut verifier) = key.verify_stream(&signature) {
                    for part in signed_prefix {
                        verifier.update(part);
                    }
                    verifiers.push(verifier);
                }
            }
        }
        verifiers
    }
}

impl StreamingCheck {
    /// A check that `keys` give one of `tags` (and/or an ed25519 verifier matches) over what
    /// was signed before the body (`signed_prefix`) and the body.
    pub(super) fn signed(
        keys: &[HmacKey],
        tags: Vec<Vec<u8>>,
        signed_prefix: &[&[u8]],
        ed25519: Vec<StreamVerifier>,
        event_id: EventIdSource,
    ) -> Self {
        let macs = if tags.is_empty() {
            Vec::new() // nothing to compare with: no need to hash the body
        } else {
            keys.iter().map(|key| key.over(signed_prefix)).collect()
        };
        Self {
            required: true,
            macs,
            tags,
            ed25519,
            event_id,
        }
    }

    /// A check that accepts every body (the `none` scheme) and names the event `event_id`.
    pub(super) fn unverified(event_id: Option<String>) -> Self {
        Self {
            required: false,
            macs: Vec::new(),
            tags: Vec::new(),
            ed25519: Vec::new(),
            event_id: EventIdSource::Headers(event_id),
        }
    }

    /// The event id found in the headers, when the scheme takes it from there (`None` for
    /// Stripe, whose id is in the body, and for requests without one).
    pub(crate) fn header_event_id(&self) -> Option<&str> {
        match &self.event_id {
            EventIdSource::Headers(id) => id.as_deref(),
            EventIdSource::StripeBody(_) => None,
        }
    }

    /// Feeds the next piece of the body.
    pub(crate) fn update(&mut self, chunk: &[u8]) {
        for mac in &mut self.macs {
            mac.update(chunk);
        }
        for verifier in &mut self.ed25519 {
            verifier.update(chunk);
        }
        if let EventIdSource::StripeBody(head) = &mut self.event_id {
            let room = STRIPE_ID_WINDOW_BYTES.saturating_sub(head.len());
            head.extend_from_slice(&chunk[..room.min(chunk.len())]);
        }
    }

    /// Whether the signature matched, and the event id: for Stripe, the first top-level `id`
    /// within the body's first [`STRIPE_ID_WINDOW_BYTES`].
    pub(crate) fn finish(self) -> Result<Verified, VerifyError> {
        let Self {
            required,
            macs,
            tags,
            ed25519,
            event_id,
        } = self;
        if required {
            // Each MAC is computed once, then compared with each tag in constant time.
            let mac_matches = macs
                .into_iter()
                .any(|mac| tags.iter().any(|tag| mac.clone().verify_slice(tag).is_ok()));
            let matched = mac_matches
                || ed25519
                    .into_iter()
                    .any(|verifier| verifier.finalize_and_verify().is_ok());
            if !matched {
                return Err(VerifyError::InvalidSignature);
            }
        }
        let event_id = match event_id {
            EventIdSource::Headers(id) => id,
            EventIdSource::StripeBody(head) => stripe_event_id::leading_event_id(&head),
        };
        Ok(Verified { event_id })
    }
}
