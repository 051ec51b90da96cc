//! The envelope: the versioned JSON document ingest puts on SQS and the worker reads back.
//!
//! The body travels exactly as received. It is written as UTF-8 text when it is valid UTF-8,
//! SQS accepts every character of it, and escaping does not make it larger than base64
//! would; otherwise it is base64 with `"encoding":"base64"`. Either way, decoding gives back
//! the same bytes.
//!
//! The worker must read every version ever written, so decoding dispatches on `v` and each
//! version keeps its own wire struct.

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The envelope version this build writes.
pub const CURRENT_VERSION: u32 = 1;

/// One received webhook, as it travels from ingest to the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Event id: the provider's delivery id where it sent one, else a UUIDv7.
    pub id: String,
    /// The `{source}` path segment the webhook was posted to.
    pub source: String,
    /// When ingest received the request.
    pub received_at: DateTime<Utc>,
    /// Request headers, names lower-cased, hop-by-hop and credential headers removed.
    pub headers: BTreeMap<String, String>,
    /// The request's `Content-Type`, if it had one.
    pub content_type: Option<String>,
    /// The body, byte for byte.
    pub body: Bytes,
}

/// Why a message could not be read as an envelope. Every variant makes the message poison:
/// retrying it cannot help.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, or JSON without the fields of its version.
    #[error("not a valid envelope: {0}")]
    Malformed(#[from] serde_json::Error),
    /// A version this build does not know (written by a newer ingest).
    #[error("unsupported envelope version {0}")]
    UnsupportedVersion(u32),
    /// The body says base64 but is not.
    #[error("envelope body is not valid base64: {0}")]
    BadBase64(#[from] base64::DecodeError),
}

/// How the body is written in the JSON document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum BodyEncoding {
    Base64,
}

/// Version 1 on the wire. Borrowed for writing, owned for reading.
#[derive(Serialize, Deserialize)]
struct WireV1<'a> {
    v: u32,
    id: Cow<'a, str>,
    source: Cow<'a, str>,
    received_at: DateTime<Utc>,
    headers: Cow<'a, BTreeMap<String, String>>,
    #[serde(default)]
    content_type: Option<Cow<'a, str>>,
    #[serde(borrow)]
    body: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    encoding: Option<BodyEncoding>,
}

/// Just enough of any version to know which one it is.
#[derive(Deserialize)]
struct VersionProbe {
    v: u32,
}

impl Envelope {
    /// Serializes the envelope as the current version.
    pub fn to_json(&self) -> String {
        let (body, encoding) = match text_body(&self.body) {
            Some(text) => (Cow::Borrowed(text), None),
            None => (
                Cow::Owned(BASE64.encode(&self.body)),
                Some(BodyEncoding::Base64),
            ),
        };
        let wire = WireV1 {
            v: CURRENT_VERSION,
            id: Cow::Borrowed(&self.id),
            source: Cow::Borrowed(&self.source),
            received_at: self.received_at,
            headers: Cow::Borrowed(&self.headers),
            content_type: self.content_type.as_deref().map(Cow::Borrowed),
            body,
            encoding,
        };
        // Strings, a string map and a timestamp: serde_json cannot fail on these.
        serde_json::to_string(&wire).unwrap_or_else(|error| unreachable!("{error}"))
    }

    /// Reads an envelope of any version this build knows.
    pub fn from_json(json: &str) -> Result<Self, DecodeError> {
        let VersionProbe { v } = serde_json::from_str(json)?;
        match v {
            1 => {
                let wire: WireV1<'_> = serde_json::from_str(json)?;
                let body = match wire.encoding {
                    None => Bytes::from(wire.body.into_owned()),
                    Some(BodyEncoding::Base64) => Bytes::from(BASE64.decode(wire.body.as_bytes())?),
                };
                Ok(Self {
                    id: wire.id.into_owned(),
                    source: wire.source.into_owned(),
                    received_at: wire.received_at,
                    headers: wire.headers.into_owned(),
                    content_type: wire.content_type.map(Cow::into_owned),
                    body,
                })
            }
            other => Err(DecodeError::UnsupportedVersion(other)),
        }
    }

    /// The body as JSON, when the content type says JSON and the body parses and PostgreSQL's
    /// `jsonb` can hold it (it refuses `\u0000` in strings).
    pub fn json_payload(&self) -> Option<serde_json::Value> {
        let content_type = self.content_type.as_deref()?;
        if !is_json_content_type(content_type) {
            return None;
        }
        let value: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        (!contains_nul(&value)).then_some(value)
    }
}

/// Everything of an envelope but its body and id, for one whose body is streamed: a body too
/// large for SQS goes to S3 as it arrives, base64-encoded, and its id may be known only at
/// the end (a Stripe event's, one derived from the body). The document is
/// `prefix + base64(body) + suffix(id)`, an ordinary version-1 envelope whose fields come in
/// another order, which [`Envelope::from_json`] reads like any other.
#[derive(Debug, Clone)]
pub struct StreamedEnvelope<'a> {
    /// The `{source}` path segment.
    pub source: &'a str,
    /// When ingest received the request.
    pub received_at: DateTime<Utc>,
    /// Request headers, as in [`Envelope::headers`].
    pub headers: &'a BTreeMap<String, String>,
    /// The request's `Content-Type`, if any.
    pub content_type: Option<&'a str>,
}

/// The fields [`StreamedEnvelope`] writes before the body.
#[derive(Serialize)]
struct StreamedHead<'a> {
    v: u32,
    source: &'a str,
    received_at: DateTime<Utc>,
    headers: &'a BTreeMap<String, String>,
    content_type: Option<&'a str>,
    encoding: BodyEncoding,
}

impl StreamedEnvelope<'_> {
    /// The document up to the body's first base64 character: `{...,"body":"`.
    pub fn prefix(&self) -> String {
        let head = StreamedHead {
            v: CURRENT_VERSION,
            source: self.source,
            received_at: self.received_at,
            headers: self.headers,
            content_type: self.content_type,
            encoding: BodyEncoding::Base64,
        };
        // Strings, a string map and a timestamp: serde_json cannot fail on these.
        let mut json = serde_json::to_string(&head).unwrap_or_else(|error| unreachable!("{error}"));
        json.pop(); // the closing brace
        json.push_str(r#","body":""#);
        json
    }

    /// The document after the body's last base64 character: `","id":"<id>"}`.
    pub fn suffix(id: &str) -> String {
        let id = serde_json::to_string(id).unwrap_or_else(|error| unreachable!("{error}"));
        format!(r#"","id":{id}}}"#)
    }
}

/// The largest body whose envelope, base64-encoded in the worst case, still leaves
/// `overhead` bytes of a message of `message_limit` bytes for the other fields.
pub const fn max_body_for(message_limit: usize, overhead: usize) -> usize {
    message_limit.saturating_sub(overhead) / 4 * 3
}

/// The body as text if writing it as a JSON string is safe for SQS and no larger than base64.
fn text_body(body: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(body).ok()?;
    // SQS accepts #x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD #x10000-#x10FFFF. JSON escapes every
    // control character, so only the two non-characters U+FFFE and U+FFFF remain to avoid.
    if text.contains(['\u{FFFE}', '\u{FFFF}']) {
        return None;
    }
    let escaped_len: usize = text.bytes().map(json_escaped_len).sum();
    (escaped_len <= body.len().div_ceil(3) * 4).then_some(text)
}

/// How many bytes one byte of a UTF-8 string takes inside a JSON string.
fn json_escaped_len(byte: u8) -> usize {
    match byte {
        b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
        0x00..=0x1f => 6,
        _ => 1,
    }
}

/// Whether a `Content-Type` value is JSON (`application/json` or any `+json` type).
pub fn is_json_content_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence.to_ascii_lowercase().ends_with("+json")
}

fn contains_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(contains_nul),
        serde_json::Value::Object(map) => {
            map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v))
        }
        _ => false,
    }
}

#[cfg(test)]
#[path = "envelope_tests.rs"]
mod tests;
