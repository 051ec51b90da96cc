//! The errors ingest answers with, each mapped to its status and the SPEC's JSON body.
//! Internal causes are logged where they happen; clients only see the code and message.

use http::{HeaderValue, Response, StatusCode, header};
use webhook_shared::server::{self, Body};

use crate::body::ReadError;
use crate::verify::VerifyError;

/// Why a request was not accepted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// No route for the path, or a source name outside `[a-z0-9_-]{1,64}`.
    #[error("no such route")]
    NotFound,
    /// A valid source name that is not configured, while unknown sources are refused.
    #[error("unknown source")]
    UnknownSource,
    /// The request's signature or timestamp did not verify.
    #[error("{0}")]
    Unauthorized(#[from] VerifyError),
    /// The source requires JSON and the content type is not JSON.
    #[error("this source requires a JSON content type")]
    UnsupportedMediaType,
    /// The source requires JSON and the body does not parse.
    #[error("the body is not valid JSON")]
    InvalidJson,
    /// The route exists but not for this method.
    #[error("method not allowed; use {allow}")]
    MethodNotAllowed {
        /// The methods the route takes, for the `Allow` header.
        allow: &'static str,
    },
    /// The body is larger than `MAX_BODY_BYTES` (or its envelope would not fit one message).
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit that was passed.
        limit: usize,
    },
    /// The headers to carry are larger than the envelope leaves room for.
    #[error("request headers are larger than {limit} bytes")]
    HeadersTooLarge {
        /// The limit that was passed.
        limit: usize,
    },
    /// The body could not be read (the client broke off, or the framing was invalid).
    #[error("request body could not be read")]
    BadBody,
    /// The body did not arrive within the body read timeout.
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    /// The body came slower than the minimum data rate once its grace period was over.
    #[error("the request body came slower than the minimum data rate")]
    BodyTooSlow,
    /// The body budget has no room for this request now; the client should retry later.
    #[error("ingest is at its memory budget for request bodies; retry later")]
    Overloaded {
        /// Seconds for the `Retry-After` header.
        retry_after_seconds: u32,
    },
    /// S3 did not take a large body (in time); the client should retry later.
    #[error("storage for large webhooks is unavailable; retry later")]
    StorageUnavailable {
        /// Seconds for the `Retry-After` header.
        retry_after_seconds: u32,
    },
    /// The source is beyond its quota; the client should retry later.
    #[error("this source is beyond its quota; retry later")]
    RateLimited {
        /// Seconds for the `Retry-After` header.
        retry_after_seconds: u32,
    },
    /// The queue did not take the message; the client should retry later.
    #[error("the queue cannot take the webhook now; retry later")]
    QueueUnavailable {
        /// Seconds for the `Retry-After` header.
        retry_after_seconds: u32,
    },
}

impl ApiError {
    /// The HTTP status for this error.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::NotFound | Self::UnknownSource => StatusCode::NOT_FOUND,
            Self::Unauthorized(error) => error.status(),
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::InvalidJson => StatusCode::BAD_REQUEST,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::BadBody => StatusCode::BAD_REQUEST,
            Self::BodyTimeout | Self::BodyTooSlow => StatusCode::REQUEST_TIMEOUT,
            Self::Overloaded { .. }
            | Self::QueueUnavailable { .. }
            | Self::StorageUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The machine-readable code in the body's `error` field.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::UnknownSource => "unknown_source",
            Self::Unauthorized(error) => error.code(),
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::InvalidJson => "invalid_json",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::RateLimited { .. } => "rate_limited",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::HeadersTooLarge { .. } => "headers_too_large",
            Self::BadBody => "bad_request",
            Self::BodyTimeout | Self::BodyTooSlow => "request_timeout",
            Self::Overloaded { .. } => "overloaded",
            Self::QueueUnavailable { .. } => "queue_unavailable",
            Self::StorageUnavailable { .. } => "storage_unavailable",
        }
    }

    /// For a body that did not come in time, why (the `reason` label of
    /// `webhook_ingest_body_timeouts_total`).
    pub(crate) fn body_timeout_reason(&self) -> Option<&'static str> {
        match self {
            Self::BodyTimeout => Some("read_timeout"),
            Self::BodyTooSlow => Some("min_rate"),
            _ => None,
        }
    }

    /// The response for this error. A body that did not come in time also closes the
    /// connection (HTTP/1.1: `Connection: close`; HTTP/2 has no such header, and the unread
    /// stream is reset instead).
    pub(crate) fn into_response(self) -> Response<Body> {
        let mut response = server::error(self.status(), self.code(), &self.to_string());
        let headers = response.headers_mut();
        match self {
            Self::MethodNotAllowed { allow } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            Self::Overloaded {
                retry_after_seconds,
            }
            | Self::RateLimited {
                retry_after_seconds,
            }
            | Self::QueueUnavailable {
                retry_after_seconds,
            }
            | Self::StorageUnavailable {
                retry_after_seconds,
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds));
            }
            Self::BodyTimeout | Self::BodyTooSlow => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

/// The answer to a body that could not be read into memory.
pub(crate) fn read_error(error: ReadError, retry_after_seconds: u32) -> ApiError {
    match error {
        ReadError::NoRoom => ApiError::Overloaded {
            retry_after_seconds,
        },
        ReadError::TooSlow { received, waited } => {
            tracing::debug!(
                received,
                ?waited,
                "request body slower than the minimum rate"
            );
            ApiError::BodyTooSlow
        }
        ReadError::Broken(error) => {
            tracing::debug!(%error, "request body could not be read");
            ApiError::BadBody
        }
    }
}
