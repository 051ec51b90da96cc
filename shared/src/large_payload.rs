//! Large payloads through S3 (the claim-check pattern), in the format of AWS's SQS extended
//! client libraries (awslabs, Java and Python), so that their consumers read our messages and
//! we read theirs.
//!
//! When a webhook's envelope is too large for SQS, ingest stores **the envelope** (the same
//! JSON an inline message would carry, with the body in base64) as an S3 object, and the SQS
//! message body becomes a pointer to it:
//!
//! ```text
//! ["software.amazon.payloadoffloading.PayloadS3Pointer",{"s3BucketName":"b","s3Key":"k"}]
//! ```
//!
//! with the message attribute `ExtendedPayloadSize` (`Number`: the object's size in bytes).
//! The libraries hand the object to their users as the message body, so an offloaded message
//! reads exactly like an inline one. Readers treat a message as a pointer when it carries
//! `ExtendedPayloadSize` or the legacy `SQSLargePayloadSize` (the Java library's default), and
//! accept both class names (`com.amazon.sqs.javamessaging.MessageS3Pointer` is the legacy
//! one). Sources: `PayloadS3Pointer.java` and `JsonDataConverter.java`
//! (awslabs/payload-offloading-java-common-lib-for-aws), `client.py`
//! (awslabs/amazon-sqs-python-extended-client-lib); see `docs/research/large-payloads.md`.

use serde::{Deserialize, Serialize};

/// Class name the current libraries write first in the pointer array.
pub const POINTER_CLASS: &str = "software.amazon.payloadoffloading.PayloadS3Pointer";
/// Class name written by the first Java library (1.0.x), still read by every library.
pub const LEGACY_POINTER_CLASS: &str = "com.amazon.sqs.javamessaging.MessageS3Pointer";
/// Message attribute marking a pointer and giving the payload's size in bytes (written by
/// ingest and by the Python library).
pub const ATTRIBUTE_PAYLOAD_SIZE: &str = "ExtendedPayloadSize";
/// The legacy name of [`ATTRIBUTE_PAYLOAD_SIZE`], written by default by the Java library.
pub const LEGACY_ATTRIBUTE_PAYLOAD_SIZE: &str = "SQSLargePayloadSize";
/// Longest event id used as is in an object key; longer or unusual ids are hashed.
const MAX_PLAIN_KEY_ID: usize = 200;

/// Where an offloaded payload is: the SQS body of an offloaded message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadPointer {
    /// The bucket holding the payload.
    #[serde(rename = "s3BucketName")]
    pub bucket: String,
    /// The object's key.
    #[serde(rename = "s3Key")]
    pub key: String,
}

/// Why an SQS body is not a pointer.
#[derive(Debug, thiserror::Error)]
pub enum PointerError {
    /// Not the two-element JSON array with an object of bucket and key.
    #[error("not an S3 payload pointer: {0}")]
    Malformed(#[from] serde_json::Error),
    /// A class name neither library writes.
    #[error("unknown S3 payload pointer class {0:?}")]
    UnknownClass(String),
}

impl PayloadPointer {
    /// The SQS message body for this pointer, compact as the Java library writes it.
    pub fn to_json(&self) -> String {
        // Two strings in a fixed shape: serde_json cannot fail on these.
        serde_json::to_string(&(POINTER_CLASS, self))
            .unwrap_or_else(|error| unreachable!("{error}"))
    }

    /// Reads a pointer written by ingest or by either library (any whitespace, either class
    /// name, unknown fields ignored).
    pub fn from_json(body: &str) -> Result<Self, PointerError> {
        let (class, pointer): (String, Self) = serde_json::from_str(body)?;
        if class != POINTER_CLASS && class != LEGACY_POINTER_CLASS {
            return Err(PointerError::UnknownClass(class));
        }
        Ok(pointer)
    }
}

/// Whether a message with these attribute names is a pointer (either size attribute).
pub fn is_pointer<'a>(attribute_names: impl IntoIterator<Item = &'a str>) -> bool {
    attribute_names
        .into_iter()
        .any(|name| name == ATTRIBUTE_PAYLOAD_SIZE || name == LEGACY_ATTRIBUTE_PAYLOAD_SIZE)
}

/// The object key for an event: `{source}/{event id}`, so that a provider's retry of one
/// delivery overwrites the same object instead of leaving another. An id that is long or
/// holds characters other than `A-Za-z0-9._-` is replaced by `sha256-` and its hex SHA-256.
pub fn object_key(source: &str, event_id: &str) -> String {
    let plain = !event_id.is_empty()
        && event_id.len() <= MAX_PLAIN_KEY_ID
        && !event_id.starts_with('.')
        && event_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if plain {
        format!("{source}/{event_id}")
    } else {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(event_id.as_bytes());
        format!("{source}/sha256-{}", hex::encode(digest))
    }
}

/// How patient the client is with S3: time per attempt (one part, one GET) and attempts.
pub type S3Timeouts = crate::sqs::ClientTimeouts;

/// Builds an S3 client from the standard AWS environment. With a custom endpoint
/// (`AWS_ENDPOINT_URL` or `AWS_ENDPOINT_URL_S3`, as for LocalStack) it addresses buckets by
/// path (`http://host/bucket/key`), since virtual-host names would not resolve there.
pub async fn s3_client(timeouts: S3Timeouts) -> aws_sdk_s3::Client {
    let config = crate::sqs::sdk_config(timeouts).await;
    let custom_endpoint =
        config.endpoint_url().is_some() || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
    let s3_config = aws_sdk_s3::config::Builder::from(&config)
        .force_path_style(custom_endpoint)
        .build();
    aws_sdk_s3::Client::from_conf(s3_config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pointer() -> PayloadPointer {
        PayloadPointer {
            bucket: "my-bucket".to_owned(),
            key: "github/72d3162e-cc78-11e3-81ab-4c9367dc0958".to_owned(),
        }
    }

    #[test]
    fn the_pointer_is_written_as_the_java_library_writes_it() {
        assert_eq!(
            pointer().to_json(),
            r#"["software.amazon.payloadoffloading.PayloadS3Pointer",{"s3BucketName":"my-bucket","s3Key":"github/72d3162e-cc78-11e3-81ab-4c9367dc0958"}]"#
        );
    }

    #[test]
    fn pointers_of_both_libraries_and_both_class_names_are_read() {
        let python = r#"["software.amazon.payloadoffloading.PayloadS3Pointer", {"s3BucketName": "my-bucket", "s3Key": "github/72d3162e-cc78-11e3-81ab-4c9367dc0958"}]"#;
        let legacy = r#"["com.amazon.sqs.javamessaging.MessageS3Pointer",{"s3BucketName":"my-bucket","s3Key":"github/72d3162e-cc78-11e3-81ab-4c9367dc0958","extra":1}]"#;
        for body in [pointer().to_json().as_str(), python, legacy] {
            assert_eq!(PayloadPointer::from_json(body).expect(body), pointer());
        }
    }

    #[test]
    fn other_bodies_are_not_pointers() {
        for body in [
            r#"["some.other.Class",{"s3BucketName":"b","s3Key":"k"}]"#,
            r#"{"s3BucketName":"b","s3Key":"k"}"#,
            r#"["software.amazon.payloadoffloading.PayloadS3Pointer",{"s3BucketName":"b"}]"#,
            r#"{"v":1}"#,
            "",
        ] {
            assert!(PayloadPointer::from_json(body).is_err(), "{body}");
        }
    }

    #[test]
    fn either_size_attribute_marks_a_pointer() {
        assert!(is_pointer(["source", "ExtendedPayloadSize"]));
        assert!(is_pointer(["SQSLargePayloadSize"]));
        assert!(!is_pointer(["source", "event_id"]));
    }

    #[test]
    fn keys_keep_plain_ids_and_hash_the_others() {
        assert_eq!(object_key("github", "abc-1.2_3"), "github/abc-1.2_3");
        for id in ["a/b", "../x", ".hidden", "sp ace", &"x".repeat(201)] {
            let key = object_key("github", id);
            assert!(key.starts_with("github/sha256-"), "{id}: {key}");
            assert_eq!(key.len(), "github/sha256-".len() + 64);
        }
        assert_ne!(object_key("a", "x/y"), object_key("a", "x/z"));
    }
}
