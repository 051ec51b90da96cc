//! Event ids of bodies that are streamed, never held whole: [`BodyIdHasher`] derives the
//! body id as the bytes come, and [`StreamedId`] gives the id [`Source::event_id`] would give
//! the whole body.

use sha2::{Digest as _, Sha256};

use super::{BODY_ID_PREFIX, EventIds, Source};

/// [`body_event_id`] computed as the body arrives in pieces.
#[derive(Debug, Clone)]
pub(crate) struct BodyIdHasher(Sha256);

impl BodyIdHasher {
    /// A hash of the source, ready for the body.
    pub(crate) fn new(source: &str) -> Self {
        let mut hash = Sha256::new();
        hash.update(source.as_bytes());
        hash.update([0]);
        Self(hash)
    }

    /// Feeds the next piece of the body.
    pub(crate) fn update(&mut self, chunk: &[u8]) {
        self.0.update(chunk);
    }

    /// The event id: the same as [`body_event_id`] of the whole body.
    pub(crate) fn finish(self) -> String {
        format!("{BODY_ID_PREFIX}{}", hex::encode(self.0.finalize()))
    }
}

/// How a streamed body's event id is found once the body is in: the counterpart of
/// [`Source::event_id`] for a body that is never held whole.
#[derive(Debug)]
pub(crate) enum StreamedId {
    /// Known before the body: the provider's id from the headers, or a new UUIDv7.
    Known(String),
    /// The verifier's id once the body is in (Stripe's is in the body), else this UUIDv7
    /// (drawn up front, so that the object key can use it).
    FromVerifier(String),
    /// The verifier's id once the body is in, else the body's hash.
    FromVerifierOrBody(BodyIdHasher),
    /// The body's hash.
    FromBody(BodyIdHasher),
}

impl StreamedId {
    /// The id to name the S3 object with, when one is known before the body: the provider's,
    /// or the UUIDv7 the event gets if the body does not name it.
    pub(crate) fn known_before_body(&self) -> Option<&str> {
        match self {
            Self::Known(id) | Self::FromVerifier(id) => Some(id),
            Self::FromVerifierOrBody(_) | Self::FromBody(_) => None,
        }
    }

    /// Feeds the next piece of the body (to the hash, where there is one).
    pub(crate) fn update(&mut self, chunk: &[u8]) {
        if let Self::FromVerifierOrBody(hash) | Self::FromBody(hash) = self {
            hash.update(chunk);
        }
    }

    /// The event id, given what the verifier found.
    pub(crate) fn finish(self, verified: Option<String>) -> String {
        match (self, verified) {
            (Self::Known(id), _) => id,
            (Self::FromVerifier(_) | Self::FromVerifierOrBody(_), Some(id)) => id,
            (Self::FromVerifier(uuid), None) => uuid,
            (Self::FromVerifierOrBody(hash) | Self::FromBody(hash), _) => hash.finish(),
        }
    }
}

impl Source {
    /// How the event id of a streamed body to `source` is found, given the id the verifier
    /// found in the headers (`None` for Stripe, whose id is in the body). Gives the same id
    /// as [`Source::event_id`] would for the whole body.
    pub(crate) fn streamed_event_id(&self, source: &str, header_id: Option<&str>) -> StreamedId {
        match (self.event_ids, header_id) {
            (EventIds::BodySha256Always, _) => StreamedId::FromBody(BodyIdHasher::new(source)),
            (EventIds::Provider | EventIds::BodySha256, Some(id)) => {
                StreamedId::Known(id.to_owned())
            }
            (EventIds::Provider, None) => {
                StreamedId::FromVerifier(uuid::Uuid::now_v7().to_string())
            }
            (EventIds::BodySha256, None) => {
                StreamedId::FromVerifierOrBody(BodyIdHasher::new(source))
            }
        }
    }
}
